// Runs inside the kernel-memory guest: the operator's mistakes, each as
// `nvgrace-vfio-user serve --socket /tmp/NAME.sock ARGS...` through the CLI's own main(),
// one after another in this one process (a Node start costs seconds under TCG).
// main() prints a failed start's line itself and the logger writes straight to fd 2, so
// stderr holds exactly what the CLI would print, framed by `@@begin NAME` and
// `@@end NAME EXIT` lines.
//
//   node kernel-mem-mistakes.mjs NAME ARGS... ';' NAME ARGS... 2>FILE
import fs from 'node:fs';
import { main } from '../../dist/cli/main.js';

const cases = [];
let current = null;
for (const a of process.argv.slice(2)) {
  if (a === ';') current = null;
  else if (current === null) cases.push((current = { name: a, args: [] }));
  else current.args.push(a);
}
// a mistake the daemon accepts would serve for ever: say so instead of hanging the guest
const STARTED_AFTER_MS = 120_000;
for (const c of cases) {
  fs.writeSync(2, `@@begin ${c.name}\n`);
  let timer;
  const started = new Promise((resolve) => {
    timer = setTimeout(() => resolve('started'), STARTED_AFTER_MS);
  });
  const code = await Promise.race([main(['node', 'nvgrace-vfio-user', 'serve', '--socket', `/tmp/${c.name}.sock`, ...c.args]), started]);
  clearTimeout(timer);
  fs.writeSync(2, `@@end ${c.name} ${code}\n`);
}
process.exit(0);
