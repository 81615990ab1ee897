/**
 * The start-up and memory floor: the least a Node.js vfio-user server can be.
 * It listens on the UNIX socket given as argument, answers VERSION and
 * REGION_READ with replies of the right shape, and has nothing else loaded.
 */
import net from 'node:net';

const HEADER = 16;
const VERSION = 1;
const REGION_READ = 9;
const REPLY = 1;
const CAPS = Buffer.from('{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096}}\0');

function reply(id: number, command: number, payload: Buffer): Buffer {
  const b = Buffer.alloc(HEADER + payload.length);
  b.writeUInt16LE(id, 0);
  b.writeUInt16LE(command, 2);
  b.writeUInt32LE(b.length, 4);
  b.writeUInt32LE(REPLY, 8);
  payload.copy(b, HEADER);
  return b;
}

const socketPath = process.argv[2];
if (!socketPath) {
  process.stderr.write('usage: floor-listener SOCKET\n');
  process.exit(2);
}

const server = net.createServer((sock) => {
  let pending: Buffer = Buffer.alloc(0);
  sock.on('data', (chunk: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (pending.length >= HEADER && pending.length >= pending.readUInt32LE(4)) {
      const size = pending.readUInt32LE(4);
      const id = pending.readUInt16LE(0);
      const command = pending.readUInt16LE(2);
      if (command === VERSION) {
        const p = Buffer.alloc(4 + CAPS.length);
        CAPS.copy(p, 4);
        sock.write(reply(id, command, p));
      } else if (command === REGION_READ) {
        const p = Buffer.alloc(16 + pending.readUInt32LE(HEADER + 12));
        pending.copy(p, 0, HEADER, HEADER + 16);
        sock.write(reply(id, command, p));
      } else {
        sock.write(reply(id, command, Buffer.alloc(0)));
      }
      pending = pending.subarray(size);
    }
  });
  sock.on('error', () => sock.destroy());
});
server.listen(socketPath);
process.on('SIGTERM', () => server.close(() => process.exit(0)));
