// Preloaded into the daemon by the endurance test (`--require`), never shipped: a full
// garbage collection on SIGUSR2, then a line on stderr, so each sample measures what the
// daemon keeps rather than garbage V8 has not collected yet (its old generation grows
// for thousands of connections before its first full collection).
'use strict';
const v8 = require('node:v8');
const vm = require('node:vm');

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');
process.on('SIGUSR2', () => {
  gc();
  process.stderr.write('endurance: full gc done\n');
});
