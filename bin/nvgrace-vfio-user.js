#!/usr/bin/env node
// Thin launcher: the CLI lives in the compiled TypeScript under dist/.
import { main } from '../dist/cli/main.js';

main(process.argv).then(
  (code) => { if (typeof code === 'number') process.exitCode = code; },
  (err) => {
    process.stderr.write(`nvgrace-vfio-user: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
