import { describe, expect, it } from 'vitest';
import { Interrupts, type IrqKind } from '../../src/device/interrupts.js';
import { Errno, IrqIndex, IrqInfoFlag, IrqSetFlag } from '../../src/wire/constants.js';
import { DeviceError } from '../../src/device/errors.js';
import type { IrqSet } from '../../src/wire/messages.js';
import { FakeEvents } from './fakes.js';

const { DATA_NONE, DATA_BOOL, DATA_EVENTFD, ACTION_MASK, ACTION_UNMASK, ACTION_TRIGGER } = IrqSetFlag;
const EF = IrqInfoFlag.EVENTFD;

const KINDS: IrqKind[] = [
  { index: IrqIndex.INTX, name: 'INTx', count: 1, flags: EF | IrqInfoFlag.MASKABLE | IrqInfoFlag.AUTOMASKED },
  { index: IrqIndex.MSI, name: 'MSI', count: 0, flags: EF },
  { index: IrqIndex.MSIX, name: 'MSI-X', count: 4, flags: EF | IrqInfoFlag.NORESIZE },
  { index: IrqIndex.ERR, name: 'ERR', count: 1, flags: EF },
  { index: IrqIndex.REQ, name: 'REQ', count: 1, flags: EF },
];

function setup() {
  const events = new FakeEvents();
  const irqs = new Interrupts(KINDS, events);
  return { events, irqs };
}

function req(flags: number, index: number, start: number, count: number, bools: number[] = []): IrqSet {
  return { argsz: 20 + bools.length, flags, index, start, count, bools: Uint8Array.from(bools) };
}

/** Assigns trigger eventfds to MSI-X vectors start.. and checks they were taken. */
function assign(irqs: Interrupts, index: number, start: number, fds: number[]): void {
  const given = [...fds];
  irqs.set(req(DATA_EVENTFD | ACTION_TRIGGER, index, start, fds.length), given);
  expect(given).toEqual([]);
}

function einval(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(DeviceError);
    expect((err as DeviceError).errno).toBe(Errno.EINVAL);
    return;
  }
  expect.fail('expected DeviceError(EINVAL)');
}

describe('Interrupts: eventfd assignment', () => {
  it('describes its irq kinds', () => {
    const { irqs } = setup();
    expect(irqs.kinds.map((k) => k.count)).toEqual([1, 0, 4, 1, 1]);
    expect(irqs.info(IrqIndex.MSIX)?.name).toBe('MSI-X');
    expect(irqs.info(5)).toBeUndefined();
  });

  it('takes ownership of the fds it is given', () => {
    const { irqs, events } = setup();
    const fds = [10, 11, 12, 13];
    irqs.set(req(DATA_EVENTFD | ACTION_TRIGGER, IrqIndex.MSIX, 0, 4), fds);
    expect(fds).toEqual([]);
    expect(irqs.heldFds).toBe(4);
    for (let n = 0; n < 4; n++) expect(irqs.isAssigned(IrqIndex.MSIX, n)).toBe(true);
    expect(events.closed).toEqual([]);
  });

  it('assigns a sub-range', () => {
    const { irqs } = setup();
    assign(irqs, IrqIndex.MSIX, 2, [20, 21]);
    expect([0, 1, 2, 3].map((n) => irqs.isAssigned(IrqIndex.MSIX, n))).toEqual([false, false, true, true]);
  });

  it('re-assigning a vector closes the old fd', () => {
    const { irqs, events } = setup();
    assign(irqs, IrqIndex.MSIX, 0, [10, 11, 12, 13]);
    assign(irqs, IrqIndex.MSIX, 1, [21]);
    expect(events.closed).toEqual([11]);
    expect(irqs.heldFds).toBe(4);
    irqs.trigger(IrqIndex.MSIX, 1);
    expect(events.signals).toEqual([21]);
  });

  it('DATA_EVENTFD without fds de-assigns and closes', () => {
    const { irqs, events } = setup();
    assign(irqs, IrqIndex.MSIX, 0, [10, 11, 12, 13]);
    irqs.set(req(DATA_EVENTFD | ACTION_TRIGGER, IrqIndex.MSIX, 2, 2), []);
    expect(events.closed).toEqual([12, 13]);
    expect([0, 1, 2, 3].map((n) => irqs.isAssigned(IrqIndex.MSIX, n))).toEqual([true, true, false, false]);
    expect(irqs.heldFds).toBe(2);
  });

  it('count 0 with DATA_NONE | TRIGGER disables the whole index', () => {
    const { irqs, events } = setup();
    assign(irqs, IrqIndex.MSIX, 0, [10, 11, 12, 13]);
    assign(irqs, IrqIndex.INTX, 0, [30]);
    irqs.set(req(DATA_NONE | ACTION_TRIGGER, IrqIndex.MSIX, 0, 0), []);
    expect(events.closed.sort()).toEqual([10, 11, 12, 13]);
    expect(irqs.heldFds).toBe(1);
    expect(irqs.isAssigned(IrqIndex.INTX, 0)).toBe(true);
    irqs.trigger(IrqIndex.MSIX, 0);
    expect(events.signals).toEqual([]);
  });

  it('count 0 on MSI (no vectors) is accepted as a disable', () => {
    const { irqs } = setup();
    expect(() => irqs.set(req(DATA_NONE | ACTION_TRIGGER, IrqIndex.MSI, 0, 0), [])).not.toThrow();
  });

  it('the unmask eventfd of INTx is held and released like a trigger fd', () => {
    const { irqs, events } = setup();
    const fds = [40];
    irqs.set(req(DATA_EVENTFD | ACTION_UNMASK, IrqIndex.INTX, 0, 1), fds);
    expect(fds).toEqual([]);
    expect(irqs.heldFds).toBe(1);
    expect(irqs.isAssigned(IrqIndex.INTX, 0)).toBe(false);
    irqs.set(req(DATA_EVENTFD | ACTION_UNMASK, IrqIndex.INTX, 0, 1), [41]);
    expect(events.closed).toEqual([40]);
    irqs.releaseAll();
    expect(events.closed).toEqual([40, 41]);
    expect(events.watched.size).toBe(0);
  });

  it('the client signalling the unmask eventfd unmasks INTx and delivers what was pending', () => {
    const { irqs, events } = setup();
    assign(irqs, IrqIndex.INTX, 0, [30]);
    irqs.set(req(DATA_EVENTFD | ACTION_UNMASK, IrqIndex.INTX, 0, 1), [31]);
    irqs.set(req(DATA_NONE | ACTION_TRIGGER, IrqIndex.INTX, 0, 1), []);
    expect(events.signals).toEqual([30]);
    expect(irqs.isMasked(IrqIndex.INTX, 0)).toBe(true); // automasked
    irqs.trigger(IrqIndex.INTX, 0); // arrives while masked: held
    expect(events.signals).toEqual([30]);
    events.fire(31); // the client (KVM's resampler) unmasks
    expect(events.signals).toEqual([30, 30]);
    expect(events.signals).not.toContain(31); // the unmask fd is the client's to signal, not ours
  });
});

describe('Interrupts: triggering', () => {
  it('DATA_NONE | TRIGGER signals every vector of the range', () => {
    const { irqs, events } = setup();
    assign(irqs, IrqIndex.MSIX, 0, [10, 11, 12, 13]);
    irqs.set(req(DATA_NONE | ACTION_TRIGGER, IrqIndex.MSIX, 1, 2), []);
    expect(events.signals).toEqual([11, 12]);
  });

  it('DATA_BOOL | TRIGGER signals the vectors whose bool is set', () => {
    const { irqs, events } = setup();
    assign(irqs, IrqIndex.MSIX, 0, [10, 11, 12, 13]);
    irqs.set(req(DATA_BOOL | ACTION_TRIGGER, IrqIndex.MSIX, 1, 3, [1, 0, 7]), []);
    expect(events.signals).toEqual([11, 13]);
  });

  it('an unassigned vector is not signalled', () => {
    const { irqs, events } = setup();
    assign(irqs, IrqIndex.MSIX, 3, [13]);
    irqs.set(req(DATA_NONE | ACTION_TRIGGER, IrqIndex.MSIX, 0, 4), []);
    expect(events.signals).toEqual([13]);
  });

  it('device-side trigger of an unknown index or vector is ignored', () => {
    const { irqs, events } = setup();
    assign(irqs, IrqIndex.MSIX, 0, [10, 11, 12, 13]);
    irqs.trigger(IrqIndex.MSIX, 4);
    irqs.trigger(9, 0);
    irqs.trigger(IrqIndex.MSI, 0);
    expect(events.signals).toEqual([]);
  });

  it('MSI-X is not automasked: every trigger is delivered', () => {
    const { irqs, events } = setup();
    assign(irqs, IrqIndex.MSIX, 0, [10]);
    irqs.trigger(IrqIndex.MSIX, 0);
    irqs.trigger(IrqIndex.MSIX, 0);
    expect(events.signals).toEqual([10, 10]);
    expect(irqs.isMasked(IrqIndex.MSIX, 0)).toBe(false);
  });
});

describe('Interrupts: INTx masking', () => {
  it('is automasked after a trigger and later triggers wait for UNMASK', () => {
    const { irqs, events } = setup();
    assign(irqs, IrqIndex.INTX, 0, [30]);
    irqs.trigger(IrqIndex.INTX, 0);
    expect(events.signals).toEqual([30]);
    expect(irqs.isMasked(IrqIndex.INTX, 0)).toBe(true);

    irqs.trigger(IrqIndex.INTX, 0);
    irqs.trigger(IrqIndex.INTX, 0);
    expect(events.signals).toEqual([30]);

    // Unmask: the pending trigger is delivered once, which masks again.
    irqs.set(req(DATA_NONE | ACTION_UNMASK, IrqIndex.INTX, 0, 1), []);
    expect(events.signals).toEqual([30, 30]);
    expect(irqs.isMasked(IrqIndex.INTX, 0)).toBe(true);

    // Unmask with nothing pending: no signal, and unmasked.
    irqs.set(req(DATA_NONE | ACTION_UNMASK, IrqIndex.INTX, 0, 1), []);
    expect(events.signals).toEqual([30, 30]);
    expect(irqs.isMasked(IrqIndex.INTX, 0)).toBe(false);
    irqs.trigger(IrqIndex.INTX, 0);
    expect(events.signals).toEqual([30, 30, 30]);
  });

  it('a SET_IRQS trigger is automasked too', () => {
    const { irqs, events } = setup();
    assign(irqs, IrqIndex.INTX, 0, [30]);
    irqs.set(req(DATA_NONE | ACTION_TRIGGER, IrqIndex.INTX, 0, 1), []);
    irqs.set(req(DATA_BOOL | ACTION_TRIGGER, IrqIndex.INTX, 0, 1, [1]), []);
    expect(events.signals).toEqual([30]);
    expect(irqs.isMasked(IrqIndex.INTX, 0)).toBe(true);
  });

  it('MASK holds triggers back; a pending one is delivered on UNMASK', () => {
    const { irqs, events } = setup();
    assign(irqs, IrqIndex.INTX, 0, [30]);
    irqs.set(req(DATA_NONE | ACTION_MASK, IrqIndex.INTX, 0, 1), []);
    expect(irqs.isMasked(IrqIndex.INTX, 0)).toBe(true);
    irqs.trigger(IrqIndex.INTX, 0);
    expect(events.signals).toEqual([]);
    irqs.set(req(DATA_BOOL | ACTION_UNMASK, IrqIndex.INTX, 0, 1, [1]), []);
    expect(events.signals).toEqual([30]);
  });

  it('DATA_BOOL with a 0 entry does not mask or unmask', () => {
    const { irqs } = setup();
    irqs.set(req(DATA_BOOL | ACTION_MASK, IrqIndex.INTX, 0, 1, [0]), []);
    expect(irqs.isMasked(IrqIndex.INTX, 0)).toBe(false);
    irqs.set(req(DATA_NONE | ACTION_MASK, IrqIndex.INTX, 0, 1), []);
    irqs.set(req(DATA_BOOL | ACTION_UNMASK, IrqIndex.INTX, 0, 1, [0]), []);
    expect(irqs.isMasked(IrqIndex.INTX, 0)).toBe(true);
  });

  it('disabling INTx clears mask and pending state', () => {
    const { irqs, events } = setup();
    assign(irqs, IrqIndex.INTX, 0, [30]);
    irqs.trigger(IrqIndex.INTX, 0);
    irqs.trigger(IrqIndex.INTX, 0); // pending
    irqs.set(req(DATA_NONE | ACTION_TRIGGER, IrqIndex.INTX, 0, 0), []);
    expect(irqs.isMasked(IrqIndex.INTX, 0)).toBe(false);
    assign(irqs, IrqIndex.INTX, 0, [31]);
    irqs.set(req(DATA_NONE | ACTION_UNMASK, IrqIndex.INTX, 0, 1), []);
    expect(events.signals).toEqual([30]); // the old pending trigger is gone
  });
});

describe('Interrupts: requests the lines cannot serve are EINVAL and change nothing (the shape is the parser\'s: checkIrqSet)', () => {
  const invalid: [string, IrqSet, number[]][] = [
    ['index 5 (past REQ)', req(DATA_NONE | ACTION_TRIGGER, 5, 0, 1), []],
    ['index 2^32-1', req(DATA_NONE | ACTION_TRIGGER, 0xffffffff, 0, 1), []],
    ['start + count beyond the vectors', req(DATA_NONE | ACTION_TRIGGER, IrqIndex.MSIX, 3, 2), []],
    ['start at the vector count', req(DATA_NONE | ACTION_TRIGGER, IrqIndex.MSIX, 4, 1), []],
    ['count that overflows start + count', req(DATA_NONE | ACTION_TRIGGER, IrqIndex.MSIX, 1, 0xffffffff), []],
    ['any vector of MSI (none exist)', req(DATA_NONE | ACTION_TRIGGER, IrqIndex.MSI, 0, 1), []],
    ['mask on a non-maskable index', req(DATA_NONE | ACTION_MASK, IrqIndex.MSIX, 0, 1), []],
    ['unmask on a non-maskable index', req(DATA_NONE | ACTION_UNMASK, IrqIndex.ERR, 0, 1), []],
    ['unmask eventfd on a non-maskable index', req(DATA_EVENTFD | ACTION_UNMASK, IrqIndex.MSIX, 0, 1), [50]],
    ['mask eventfd', req(DATA_EVENTFD | ACTION_MASK, IrqIndex.INTX, 0, 1), [50]],
  ];

  for (const [name, request, fds] of invalid) {
    it(name, () => {
      const { irqs, events } = setup();
      assign(irqs, IrqIndex.MSIX, 0, [10, 11, 12, 13]);
      assign(irqs, IrqIndex.INTX, 0, [30]);
      const given = [...fds];
      einval(() => irqs.set(request, given));
      // The fds stay with the caller, nothing was closed or signalled, the old fds are still held.
      expect(given).toEqual(fds);
      expect(events.closed).toEqual([]);
      expect(events.signals).toEqual([]);
      expect(irqs.heldFds).toBe(5);
      expect(irqs.isMasked(IrqIndex.INTX, 0)).toBe(false);
    });
  }
});

describe('Interrupts.releaseAll', () => {
  it('closes every fd of every index and clears the mask state', () => {
    const { irqs, events } = setup();
    assign(irqs, IrqIndex.MSIX, 0, [10, 11, 12, 13]);
    assign(irqs, IrqIndex.INTX, 0, [30]);
    irqs.set(req(DATA_EVENTFD | ACTION_UNMASK, IrqIndex.INTX, 0, 1), [31]);
    assign(irqs, IrqIndex.ERR, 0, [40]);
    assign(irqs, IrqIndex.REQ, 0, [41]);
    irqs.trigger(IrqIndex.INTX, 0);
    expect(irqs.isMasked(IrqIndex.INTX, 0)).toBe(true);
    irqs.releaseAll();
    expect([...events.closed].sort((a, b) => a - b)).toEqual([10, 11, 12, 13, 30, 31, 40, 41]);
    expect(irqs.heldFds).toBe(0);
    expect(irqs.isMasked(IrqIndex.INTX, 0)).toBe(false);
    irqs.releaseAll(); // nothing left: no double close (the fake throws on one)
    expect(events.closed.length).toBe(8);
  });
});
