import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Tests that spawn the CLI run the compiled dist/: compile it once, fresh, before any test. */
export default function setup(): void {
  // `npm run test:arm64` compiles dist/ on the host from the same sources (tsc under
  // emulation costs minutes per run).
  if (process.env['NVGRACE_DIST_PREBUILT'] === '1') return;
  const root = fileURLToPath(new URL('../..', import.meta.url));
  execFileSync(process.execPath, [fileURLToPath(new URL('../../node_modules/typescript/bin/tsc', import.meta.url)), '-p', 'tsconfig.build.json'], {
    cwd: root,
    stdio: 'inherit',
  });
}
