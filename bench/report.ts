import type { Figure } from './figures.js';
import { machineLine, type Machine } from './machine.js';

export interface BenchResult {
  tool: 'nvgrace-vfio-user bench';
  mode: 'full' | 'quick';
  runs: number;
  startedAt: string;
  durationS: number;
  machine: Machine;
  figures: Figure[];
}

/** A value in its unit, with a precision that suits it. */
export function formatValue(v: number, unit: string): string {
  if (unit.endsWith('/s') && !unit.startsWith('GB')) {
    if (v >= 1e6) return `${(v / 1e6).toFixed(2)} M`;
    if (v >= 1e3) return `${(v / 1e3).toFixed(1)} k`;
    return v.toFixed(0);
  }
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function spread(f: Figure, which: 'daemon' | 'floor'): string {
  const s = f[which];
  return `${formatValue(s.median, f.unit)} [${formatValue(s.min, f.unit)}–${formatValue(s.max, f.unit)}]`;
}

function ratioText(f: Figure): string {
  return `${f.ratio.median.toFixed(2)}× [${f.ratio.min.toFixed(2)}–${f.ratio.max.toFixed(2)}]`;
}

function targetText(f: Figure): string {
  if (!f.target) return '';
  return `${f.target.text} ${f.target.met ? '✅' : '❌'}`;
}

export function markdown(r: BenchResult): string {
  const lines = [
    `## nvgrace-vfio-user benchmark (${r.mode})`,
    '',
    `Machine: ${machineLine(r.machine)}.`,
    `Run: ${r.startedAt}, ${r.durationS.toFixed(0)} s; each figure is the median [min–max] of ${r.runs} runs, alternating with its floor; the ratio is taken run by run.`,
    '',
    '| Figure | Unit | Daemon | Floor | Daemon / floor | Target |',
    '| --- | --- | --- | --- | --- | --- |',
  ];
  for (const f of r.figures) {
    lines.push(`| ${f.title} | ${f.unit} | ${spread(f, 'daemon')} | ${spread(f, 'floor')} | ${ratioText(f)} | ${targetText(f)} |`);
  }
  lines.push('', 'Floors:', '');
  const seen = new Set<string>();
  for (const f of r.figures) {
    if (seen.has(f.floorLabel)) continue;
    seen.add(f.floorLabel);
    const ids = r.figures.filter((g) => g.floorLabel === f.floorLabel).map((g) => g.title);
    lines.push(`- ${ids.join('; ')}: ${f.floorLabel}`);
  }
  const withTargets = r.figures.filter((f) => f.target);
  lines.push('', `Targets met: ${withTargets.filter((f) => f.target!.met).length} of ${withTargets.length}.`, '');
  return lines.join('\n');
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A bar chart: each figure's median beside its floor's, on the figure's own scale. */
export function svg(r: BenchResult): string {
  const rowH = 46;
  const top = 64;
  const labelW = 390;
  const barW = 380;
  const width = labelW + barW + 250;
  const height = top + r.figures.length * rowH + 20;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">nvgrace-vfio-user benchmark (${r.mode}): daemon beside its floor</text>`,
    `<text x="10" y="38" font-size="11" fill="#444">${esc(machineLine(r.machine))}</text>`,
    `<rect x="${labelW}" y="46" width="12" height="10" fill="#2b6cb0"/><text x="${labelW + 16}" y="55" font-size="11">daemon</text>`,
    `<rect x="${labelW + 80}" y="46" width="12" height="10" fill="#a0aec0"/><text x="${labelW + 96}" y="55" font-size="11">floor</text>`,
    `<text x="${labelW + barW + 80}" y="55" font-size="11" fill="#444">daemon/floor; ✓ ✗ target</text>`,
  ];
  r.figures.forEach((f, i) => {
    const y = top + i * rowH;
    const max = Math.max(f.daemon.median, f.floor.median) || 1;
    const dw = Math.max(1, (f.daemon.median / max) * barW);
    const fw = Math.max(1, (f.floor.median / max) * barW);
    const met = f.target ? (f.target.met ? ' ✓' : ' ✗') : '';
    out.push(
      `<text x="10" y="${y + 17}">${esc(f.title)}</text>`,
      `<text x="10" y="${y + 32}" font-size="10" fill="#666">${esc(f.unit)}, ${f.better} is better</text>`,
      `<rect x="${labelW}" y="${y + 6}" width="${dw.toFixed(1)}" height="14" fill="#2b6cb0"/>`,
      `<rect x="${labelW}" y="${y + 22}" width="${fw.toFixed(1)}" height="14" fill="#a0aec0"/>`,
      `<text x="${labelW + dw + 6}" y="${y + 17}" font-size="11">${esc(formatValue(f.daemon.median, f.unit))}</text>`,
      `<text x="${labelW + fw + 6}" y="${y + 33}" font-size="11" fill="#444">${esc(formatValue(f.floor.median, f.unit))}</text>`,
      `<text x="${labelW + barW + 80}" y="${y + 26}" font-size="12">${f.ratio.median.toFixed(2)}×${esc(met)}</text>`,
    );
  });
  out.push('</svg>', '');
  return out.join('\n');
}
