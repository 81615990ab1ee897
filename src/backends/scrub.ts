import type { ScrubProgress } from '../device/memory-scrub.js';
import { native } from '../native/native.js';
import type { Aperture } from './aperture.js';
import { zeroThroughMapping } from './scrub-primitive.js';
import { WindowedMemory } from './windowed-memory.js';


/** Bytes zeroed per step: big enough to run at memory speed, small enough to keep the loop responsive. */
const WINDOW = 256 * 1024 * 1024;

/**
 * Zeroes the aperture's memory so the next tenant cannot read the previous
 * one's data. File-like backings (memfd, tmpfs, hugetlbfs) get their pages
 * released with a hole punch, which reads back as zeros and frees the memory.
 * Huge pages and device-dax are written with zeros through the mappings the
 * daemon keeps of them, so only the first scrub pays for the page tables;
 * /dev/mem through a temporary mapping per window. Either way the work goes in
 * steps, yielding to the event loop between them so signals and timers keep working.
 */
export async function scrubAperture(
  aperture: Aperture,
  onProgress: (p: ScrubProgress) => void = () => {},
  shouldStop: () => boolean = () => false,
): Promise<'done' | 'stopped'> {
  const { fd, fdOffset, size } = aperture.memory;
  // Huge pages are zeroed in place, not punched: punching would give back their
  // reservation and the NUMA placement they were allocated with.
  let punch = aperture.kind === 'memfd' || aperture.kind === 'file';
  const granularity = aperture.facts.pageSize;
  const step = Math.max(WINDOW, granularity);
  const windowed = aperture.memory instanceof WindowedMemory ? aperture.memory : null;
  for (let done = 0; done < size; ) {
    if (shouldStop()) return 'stopped';
    // Through the kept windows a step is the rest of a window (up to 1 GiB): memset
    // here runs faster the bigger the call (16, 64, 256 MiB and 1 GiB calls on 2 MiB
    // pages: 25, 50, 59 and 68 GB/s), so smaller steps would cost 10-60 % of the
    // speed. It holds the event loop for 15-25 ms once the pages are mapped, up to
    // ~250 ms on the first pass over 4 KiB pages.
    const len = Math.min(!punch && windowed ? windowed.windowSize - (done % windowed.windowSize) : step, size - done);
    if (punch) {
      try {
        native.fallocatePunchHole(fd, fdOffset + done, len);
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code !== 'EOPNOTSUPP' && code !== 'ENOTSUP' && code !== 'ENODEV') throw err;
        punch = false;
        continue;
      }
    } else if (windowed) {
      windowed.zero(done, len);
    } else {
      zeroThroughMapping(fd, fdOffset + done, len, granularity);
    }
    done += len;
    onProgress({ done, total: size });
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return 'done';
}
