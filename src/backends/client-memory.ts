import fs from 'node:fs';
import type { DmaFileOps } from '../device/dma-maps.js';
import type { EventSink } from '../device/interrupts.js';
import { native } from '../native/native.js';
import { Errno } from '../wire/constants.js';
import { WireError } from '../wire/errors.js';

/** File operations on the memory fds a client shares with DMA_MAP. */
export const dmaFileOps: DmaFileOps = {
  check(fd, offset, size) {
    let st: fs.Stats;
    try {
      st = fs.fstatSync(fd);
    } catch {
      throw new WireError(Errno.EBADF, 'DMA_MAP: fd cannot be inspected');
    }
    if (!st.isFile()) throw new WireError(Errno.EINVAL, 'DMA_MAP: fd is not a memory file');
    if (offset + size > st.size) {
      throw new WireError(Errno.EINVAL, `DMA_MAP: [${offset}, +${size}) beyond the file's ${st.size} bytes`);
    }
  },
  map(fd, offset, size, writable) {
    const prot = native.PROT_READ | (writable ? native.PROT_WRITE : 0);
    return native.mmap(fd, size, prot, native.MAP_SHARED, offset);
  },
  unmap(memory) {
    native.munmap(memory);
  },
  close(fd) {
    native.closeFd(fd);
  },
};

/** Interrupt delivery through the client's eventfds. */
export const eventfdSink: EventSink = {
  signal(fd) {
    // -1 means the counter is saturated: the client has not consumed earlier interrupts, nothing is lost
    native.eventfdWrite(fd, 1);
  },
  watch(fd, onSignal) {
    const poller = native.createPoller(fd, (status) => {
      if (status < 0) return;
      if (native.eventfdRead(fd) > 0) onSignal();
    });
    poller.start(native.READABLE);
    return () => poller.close();
  },
  close(fd) {
    native.closeFd(fd);
  },
};
