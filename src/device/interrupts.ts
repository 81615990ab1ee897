import { Errno, IRQ_SET_ACTION_MASK, IRQ_SET_DATA_MASK, IrqInfoFlag, IrqSetFlag } from '../wire/constants.js';
import { DeviceError } from './errors.js';
import type { IrqSet } from '../wire/messages.js';
import { FdBudget } from './fd-budget.js';

export interface IrqKind {
  index: number;
  name: string;
  count: number;
  flags: number;
}

/** Eventfd operations, injected so the device model does no I/O of its own. */
export interface EventSink {
  /** Throws (DeviceError) unless `fd` is something signal() can use. */
  check(fd: number): void;
  signal(fd: number): void;
  /** Calls `onSignal` whenever the client signals `fd`; returns the way to stop. */
  watch(fd: number, onSignal: () => void): () => void;
  close(fd: number): void;
}

/**
 * Where interrupts really come from when a host function is passed through:
 * its driver takes the client's eventfds and signals them itself, so the
 * daemon is not on the interrupt path.
 */
export interface IrqRoute {
  /**
   * Applies one validated SET_IRQS to the host before the table changes;
   * throwing refuses it. `fds` are the eventfds (none de-assigns).
   */
  apply(req: IrqSet, fds: readonly number[]): void;
  /** The client left: the index is disabled on the host; must not throw. */
  disable(index: number): void;
}

interface IrqState {
  kind: IrqKind;
  trigger: (number | null)[];
  /** Eventfds the client signals to unmask (INTx resampling, as KVM's irqfd does). */
  unmaskFd: (number | null)[];
  unwatch: ((() => void) | null)[];
  masked: boolean[];
  /** A trigger that arrived while masked, delivered on unmask. */
  pending: boolean[];
}

/**
 * Interrupt lines of the device and the eventfds the client attached to them,
 * with the DEVICE_SET_IRQS semantics of <linux/vfio.h>.
 */
export class Interrupts {
  private readonly state: IrqState[];

  constructor(
    kinds: readonly IrqKind[],
    private readonly sink: EventSink,
    private readonly route: IrqRoute | null = null,
    private readonly fds: FdBudget = new FdBudget(Infinity),
  ) {
    this.state = kinds.map((kind) => ({
      kind,
      trigger: new Array<number | null>(kind.count).fill(null),
      unmaskFd: new Array<number | null>(kind.count).fill(null),
      unwatch: new Array<(() => void) | null>(kind.count).fill(null),
      masked: new Array<boolean>(kind.count).fill(false),
      pending: new Array<boolean>(kind.count).fill(false),
    }));
  }

  get kinds(): IrqKind[] {
    return this.state.map((s) => s.kind);
  }

  info(index: number): IrqKind | undefined {
    return this.state[index]?.kind;
  }

  /** Eventfds currently held, for accounting. */
  get heldFds(): number {
    let n = 0;
    for (const s of this.state) for (const fd of [...s.trigger, ...s.unmaskFd]) if (fd !== null) n++;
    return n;
  }

  /**
   * Applies one SET_IRQS whose shape the parser checked (checkIrqSet). Takes
   * ownership of the fds it keeps by removing them from `fds`; whatever is
   * left there the caller closes. A refusal changes nothing.
   */
  set(req: IrqSet, fds: number[]): void {
    const s = this.state[req.index];
    if (!s) throw new DeviceError(Errno.EINVAL, `SET_IRQS: no irq index ${req.index}`);
    if (req.count === 0) {
      this.route?.apply(req, fds);
      this.disable(s);
      return;
    }
    checkSupported(s.kind, req);
    if ((req.flags & IRQ_SET_DATA_MASK) === IrqSetFlag.DATA_EVENTFD) this.attachEventfds(s, req, fds);
    else if (this.route) this.route.apply(req, fds); // the host driver triggers, masks or unmasks its own line
    else this.act(s, req);
  }

  /** DATA_EVENTFD: (de)assigns the trigger or unmask eventfds of the vectors. */
  private attachEventfds(s: IrqState, req: IrqSet, fds: number[]): void {
    const trigger = (req.flags & IRQ_SET_ACTION_MASK) === IrqSetFlag.ACTION_TRIGGER;
    const table = trigger ? s.trigger : s.unmaskFd;
    // checked and counted before anything changes, here or in a host driver
    for (const fd of fds) this.sink.check(fd);
    let replaced = 0;
    for (let i = 0; i < req.count; i++) if (table[req.start + i] != null) replaced++;
    this.fds.take(fds.length - replaced, 'SET_IRQS');
    try {
      this.route?.apply(req, fds);
    } catch (err) {
      this.fds.release(Math.max(0, fds.length - replaced));
      throw err;
    }
    const taken = fds.splice(0, fds.length);
    for (let i = 0; i < req.count; i++) {
      const n = req.start + i;
      const fd = taken.length > 0 ? taken[i]! : null;
      if (trigger) {
        const old = s.trigger[n];
        if (old !== null && old !== undefined) this.sink.close(old);
        s.trigger[n] = fd;
      } else {
        this.dropUnmaskFd(s, n);
        s.unmaskFd[n] = fd;
        // A host driver watches its own unmask eventfds (VFIO's irqfd): only an emulated line needs ours.
        if (fd !== null && !this.route) s.unwatch[n] = this.sink.watch(fd, () => this.unmask(s, n));
      }
    }
    if (replaced > taken.length) this.fds.release(replaced - taken.length);
  }

  /** DATA_NONE or DATA_BOOL on an emulated line: trigger, mask or unmask the chosen vectors. */
  private act(s: IrqState, req: IrqSet): void {
    const action = req.flags & IRQ_SET_ACTION_MASK;
    const bools = (req.flags & IRQ_SET_DATA_MASK) === IrqSetFlag.DATA_BOOL;
    for (let i = 0; i < req.count; i++) {
      if (bools && req.bools[i] === 0) continue;
      const n = req.start + i;
      if (action === IrqSetFlag.ACTION_TRIGGER) this.trigger(req.index, n);
      else if (action === IrqSetFlag.ACTION_MASK) s.masked[n] = true;
      else this.unmask(s, n);
    }
  }

  /** Raises interrupt `n` of `index`: signals its eventfd unless masked. */
  trigger(index: number, n: number): void {
    const s = this.state[index];
    if (!s || n >= s.kind.count) return;
    if (s.masked[n]) {
      s.pending[n] = true;
      return;
    }
    const fd = s.trigger[n];
    if (fd !== null && fd !== undefined) this.sink.signal(fd);
    if (s.kind.flags & IrqInfoFlag.AUTOMASKED) s.masked[n] = true;
  }

  isAssigned(index: number, n: number): boolean {
    const fd = this.state[index]?.trigger[n];
    return fd !== null && fd !== undefined;
  }

  isMasked(index: number, n: number): boolean {
    return this.state[index]?.masked[n] ?? false;
  }

  /** Client gone: close every eventfd it gave us and clear mask state. */
  releaseAll(): void {
    for (const s of this.state) {
      if (this.route && [...s.trigger, ...s.unmaskFd].some((fd) => fd !== null)) this.route.disable(s.kind.index);
      this.disable(s);
    }
  }

  private unmask(s: IrqState, n: number): void {
    s.masked[n] = false;
    if (s.pending[n]) {
      s.pending[n] = false;
      this.trigger(s.kind.index, n);
    }
  }

  private dropUnmaskFd(s: IrqState, n: number): void {
    s.unwatch[n]?.();
    s.unwatch[n] = null;
    const fd = s.unmaskFd[n];
    if (fd !== null && fd !== undefined) this.sink.close(fd);
    s.unmaskFd[n] = null;
  }

  private disable(s: IrqState): void {
    let closed = 0;
    for (let i = 0; i < s.trigger.length; i++) {
      const fd = s.trigger[i];
      if (fd !== null && fd !== undefined) {
        this.sink.close(fd);
        closed++;
      }
      s.trigger[i] = null;
      if (s.unmaskFd[i] != null) closed++;
      this.dropUnmaskFd(s, i);
    }
    this.fds.release(closed);
    s.masked.fill(false);
    s.pending.fill(false);
  }
}

/** What this line cannot do: vectors it does not have, masking when it is not maskable, mask eventfds. */
function checkSupported(kind: IrqKind, req: IrqSet): void {
  if (req.start >= kind.count || req.count > kind.count - req.start) {
    throw new DeviceError(Errno.EINVAL, `SET_IRQS: ${kind.name} range ${req.start}+${req.count} beyond ${kind.count}`);
  }
  const action = req.flags & IRQ_SET_ACTION_MASK;
  if (action !== IrqSetFlag.ACTION_TRIGGER && !(kind.flags & IrqInfoFlag.MASKABLE)) {
    throw new DeviceError(Errno.EINVAL, `SET_IRQS: ${kind.name} is not maskable`);
  }
  if (action === IrqSetFlag.ACTION_MASK && (req.flags & IRQ_SET_DATA_MASK) === IrqSetFlag.DATA_EVENTFD) {
    throw new DeviceError(Errno.EINVAL, 'SET_IRQS: mask eventfds are not supported');
  }
}
