/**
 * The trapped round trip's Node.js floor: the least a vfio-user server on this
 * project's native binding can do per request. One poller, recvmsg until
 * EAGAIN, frame, answer VERSION and REGION_READ with replies of the right
 * size (no validation, no device model), one sendmsg each. What the daemon
 * takes beyond this is its own code; what this takes beyond the C peer is
 * Node.js (bench/NOTES.md).
 */
import { distModule } from './paths.js';

interface Poller {
  start(events: number): void;
  close(): void;
}
interface NativeSocket {
  native: {
    listenUnix(path: string, backlog: number, mode: number): number;
    accept(listenFd: number): number;
    createPoller(fd: number, callback: (status: number, events: number) => void): Poller;
    recvMsg(fd: number, buf: Uint8Array, offset: number, length: number, fdsOut: Int32Array): number;
    sendMsg(fd: number, buf: Uint8Array, offset: number, length: number, fds: null): number;
    closeFd(fd: number): void;
    readonly READABLE: number;
  };
}

const HEADER = 16;
const VERSION = 1;
const REGION_READ = 9;
const REPLY = 1;

const socketPath = process.argv[2];
if (!socketPath) {
  process.stderr.write('usage: node-echo-server SOCKET\n');
  process.exit(2);
}
const { native } = (await import(distModule('native/native.js'))) as NativeSocket;
const listenFd = native.listenUnix(socketPath, 16, 0o600);
const buf = Buffer.allocUnsafe(64 * 1024);
const reply = Buffer.alloc(HEADER + 16 + 4096);
const fds = new Int32Array(17);

function serve(fd: number): void {
  let end = 0;
  const poller = native.createPoller(fd, () => {
    for (;;) {
      const n = native.recvMsg(fd, buf, end, buf.length - end, fds);
      if (n < 0) return;
      if (n === 0) {
        poller.close();
        native.closeFd(fd);
        return;
      }
      end += n;
      let at = 0;
      while (end - at >= HEADER && end - at >= buf.readUInt32LE(at + 4)) {
        const command = buf.readUInt16LE(at + 2);
        const size = command === REGION_READ ? HEADER + 16 + buf.readUInt32LE(at + HEADER + 12) : command === VERSION ? HEADER + 4 : HEADER;
        reply.writeUInt16LE(buf.readUInt16LE(at), 0);
        reply.writeUInt16LE(command, 2);
        reply.writeUInt32LE(size, 4);
        reply.writeUInt32LE(REPLY, 8);
        native.sendMsg(fd, reply, 0, size, null);
        at += buf.readUInt32LE(at + 4);
      }
      buf.copyWithin(0, at, end);
      end -= at;
    }
  });
  poller.start(native.READABLE);
}

native
  .createPoller(listenFd, () => {
    const fd = native.accept(listenFd);
    if (fd >= 0) serve(fd);
  })
  .start(native.READABLE);
process.on('SIGTERM', () => process.exit(0));
