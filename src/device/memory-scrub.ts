/**
 * Zeroing the device's memory between tenants: when it is done and how far it
 * got. The daemon schedules it; a backend does the zeroing.
 */
export type ScrubMode = 'never' | 'on-release' | 'on-start';
export const SCRUB_MODES: readonly ScrubMode[] = ['never', 'on-release', 'on-start'];

export interface ScrubProgress {
  done: number;
  total: number;
}
