import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The repository root: the bench runs compiled from .cache/bench/js, or as TypeScript under vitest. */
function findRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg) && (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string }).name === 'nvgrace-vfio-user') return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('bench: cannot find the repository root');
    dir = up;
  }
}

export const repoRoot = findRoot();

/** The daemon's command line, as a user runs it. */
export const daemonBin = path.join(repoRoot, 'bin', 'nvgrace-vfio-user.js');

/** URL of a compiled module of the daemon (dist/), for the parts the bench runs in-process. */
export function distModule(rel: string): string {
  return pathToFileURL(path.join(repoRoot, 'dist', rel)).href;
}
