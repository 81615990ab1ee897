import { pairedRatios, summarize, type Summary } from './stats.js';

export type Better = 'lower' | 'higher';

export interface Target {
  /** e.g. "≤ 1.3× floor" */
  text: string;
  met: boolean;
}

/** One measured figure beside its floor, measured in alternating runs. */
export interface Figure {
  id: string;
  title: string;
  unit: string;
  better: Better;
  daemon: Summary;
  floor: Summary;
  /** What the floor is. */
  floorLabel: string;
  /** daemon / floor, run by run. */
  ratio: Summary;
  target: Target | null;
  /** Diagnostics kept in the JSON (e.g. mean and p99 latency, CPU time per request). */
  detail?: Record<string, Summary>;
}

export interface FigureSpec {
  id: string;
  title: string;
  unit: string;
  better: Better;
  floorLabel: string;
}

export function figure(spec: FigureSpec, daemonRuns: number[], floorRuns: number[]): Figure {
  return {
    ...spec,
    daemon: summarize(daemonRuns),
    floor: summarize(floorRuns),
    ratio: summarize(pairedRatios(daemonRuns, floorRuns)),
    target: null,
  };
}

/** A target on the ratio to the floor: at most `max` (lower is better) or at least `min`. */
export function ratioTarget(f: Figure, bound: number): Target {
  const x = f.ratio.median;
  return f.better === 'lower'
    ? { text: `≤ ${bound}× floor`, met: x <= bound }
    : { text: `≥ ${bound}× floor`, met: x >= bound };
}
