/**
 * JavaScript for a child process (CommonJS or module) that counts young-generation
 * collections (scavenges) into `gcs`; `obs.disconnect()` stops it. An allocation in a hot
 * loop fills the young generation and shows up as scavenges. Full collections are left
 * out: V8 also starts them on a timer (its memory reducer), and under user-mode emulation,
 * where a loop runs 10 to 30 times longer, such a collection lands inside the measured
 * loop without saying anything about it.
 */
export const SCAVENGE_COUNTER = `
let gcs = 0;
const { PerformanceObserver: GcObserver, constants: gcConstants } = process.getBuiltinModule('node:perf_hooks');
const obs = new GcObserver((list) => {
  for (const e of list.getEntries()) if (e.detail?.kind === gcConstants.NODE_PERFORMANCE_GC_MINOR) gcs++;
});
obs.observe({ entryTypes: ['gc'] });
`;
