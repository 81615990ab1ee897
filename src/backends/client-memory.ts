import fs from 'node:fs';
import type { DmaFileOps } from '../device/dma-maps.js';
import type { EventSink } from '../device/interrupts.js';
import { native, type Poller } from '../native/native.js';
import { Errno } from '../wire/constants.js';
import { DeviceError } from '../device/errors.js';

/** File operations on the memory fds a client shares with DMA_MAP. */
export const dmaFileOps: DmaFileOps = {
  check(fd, offset, size) {
    let st: fs.Stats;
    try {
      st = fs.fstatSync(fd);
    } catch {
      throw new DeviceError(Errno.EBADF, 'DMA_MAP: fd cannot be inspected');
    }
    if (!st.isFile()) throw new DeviceError(Errno.EINVAL, 'DMA_MAP: fd is not a memory file');
    if (offset + size > st.size) {
      throw new DeviceError(Errno.EINVAL, `DMA_MAP: [${offset}, +${size}) beyond the file's ${st.size} bytes`);
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
  check(fd) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      throw new DeviceError(Errno.EBADF, 'SET_IRQS: fd cannot be inspected');
    }
    // Anything else (a pipe, a FIFO, a file) could block or be written into.
    if (target !== 'anon_inode:[eventfd]') throw new DeviceError(Errno.EINVAL, `SET_IRQS: fd is not an eventfd (${target})`);
  },
  signal(fd) {
    // A full counter (-1) already wakes the reader: the interrupt is not lost.
    native.eventfdSignal(fd);
  },
  watch(fd, onSignal) {
    let poller: Poller;
    try {
      poller = native.createPoller(fd, (status) => {
        if (status < 0) return;
        // the client may read its eventfd first, and may have made it blocking
        if (native.eventfdTryRead(fd) > 0) onSignal();
      });
      poller.start(native.READABLE);
    } catch {
      return () => {}; // an eventfd epoll cannot watch: unmask by eventfd does nothing
    }
    return () => poller.close();
  },
  close(fd) {
    native.closeFd(fd);
  },
};
