// Runs inside the systemd guest: a vfio-user client (ours, from the installed checkout's
// compiled dist/) that reads, writes or holds a device served by a socket-activated daemon.
//
//   node systemd-client.mjs SOCKET OP ARGS... [OP ARGS...]...
//
// one session running each OP in turn:
//   write REGION OFFSET HEX   write the bytes (a trapped write); prints `SDCLIENT wrote`
//   read REGION OFFSET LENGTH print `SDCLIENT read HEX`
//   hold FILE                 stay attached until FILE exists
// REGION is a vfio-user region index (0 BAR0, 2 BAR2). It prints `SDCLIENT pid=N attached`
// once it has the device's info; the exit status is 0 on success. One process for several
// steps: each Node start costs seconds under TCG.
import fs from 'node:fs';

const CHECKOUT = process.env.NVGRACE_CHECKOUT ?? '/opt/nvgrace-vfio-user';
const { VfioUserClient } = await import(`${CHECKOUT}/dist/client/client.js`);

const [socket, ...ops] = process.argv.slice(2);
const num = (s) => Number(s);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const client = VfioUserClient.connect(socket);
try {
  await client.negotiate();
  await client.deviceInfo();
  console.log(`SDCLIENT pid=${process.pid} attached`);
  while (ops.length > 0) {
    const op = ops.shift();
    if (op === 'write') {
      const [region, offset, hex] = ops.splice(0, 3);
      await client.regionWrite(num(region), num(offset), Buffer.from(hex, 'hex'));
      console.log('SDCLIENT wrote');
    } else if (op === 'read') {
      const [region, offset, length] = ops.splice(0, 3);
      const bytes = await client.regionRead(num(region), num(offset), num(length));
      console.log(`SDCLIENT read ${bytes.toString('hex')}`);
    } else if (op === 'hold') {
      const [file] = ops.splice(0, 1);
      for (let i = 0; i < 3000 && !fs.existsSync(file); i++) await sleep(100);
      console.log('SDCLIENT released');
    } else {
      throw new Error(`unknown operation ${op}`);
    }
  }
} finally {
  client.close();
}
