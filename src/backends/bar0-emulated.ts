import { native } from '../native/native.js';
import type { Bar0Source } from '../device/bar0-source.js';
import { READINESS_REGISTERS, READY_VALUE } from '../device/readiness.js';
import { sealedMemfd } from './sealed-memfd.js';
import { WindowedMemory } from './windowed-memory.js';

export const EMULATED_BAR0_SIZE = 16 * 1024 * 1024;

// The emulated device reports the GPU's readiness registers ready.
export { READINESS_REGISTERS, READY_VALUE } from '../device/readiness.js';

/** A register file in shared memory, mapped by the client like a real BAR0. */
export function openEmulatedBar0(): Bar0Source {
  const fd = sealedMemfd('nvgrace-bar0', EMULATED_BAR0_SIZE);
  // sealed, so trapped register accesses can copy from a mapping instead of a pread/pwrite syscall each
  const memory = new WindowedMemory(fd, 0, EMULATED_BAR0_SIZE, native.pageSize());
  const ready = Buffer.alloc(4);
  ready.writeUInt32LE(READY_VALUE);
  const reset = () => {
    for (const reg of READINESS_REGISTERS) memory.write(reg, ready, 0, 4);
  };
  reset();
  let open = true;
  return {
    kind: 'emulated',
    description: 'emulated register file',
    memory,
    barSize: EMULATED_BAR0_SIZE,
    reset,
    close() {
      if (open) {
        memory.close();
        native.closeFd(fd);
      }
      open = false;
    },
  };
}
