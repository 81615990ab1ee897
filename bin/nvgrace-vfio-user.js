#!/usr/bin/env node
// Thin launcher: the CLI lives in the compiled TypeScript under dist/.
import { main } from '../dist/cli/main.js';

// `inspect | head` closes stdout early: that is not an error worth a stack trace.
process.stdout.on('error', (err) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

main(process.argv).then(
  (code) => { if (typeof code === 'number') process.exitCode = code; },
  (err) => {
    process.stderr.write(`nvgrace-vfio-user: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
