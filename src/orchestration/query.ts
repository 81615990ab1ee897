import { QEMU_LIKE_CAPS, VfioUserClient } from '../client/client.js';
import { native } from '../native/native.js';
import type { LayoutName } from '../device/layout.js';
import { RegionIndex } from '../wire/constants.js';
import { hexId, pciHole64For, productName, type DeviceDescription, type NumaLayout } from './description.js';

/**
 * Asks a running daemon, as a vfio-user client, what it serves. It proposes
 * to take no fds, so it is never handed a mapping, and it only reads: the
 * daemon sees a client that could not have changed the device, and does not
 * scrub after it. The price is honesty about what stays invisible (see
 * `unknown`): the memory size behind the BAR shows only in the mmap areas,
 * which come with an fd, and the backing is not on the wire at all.
 */
export async function describeFromSocket(socket: string, numa: NumaLayout, timeoutMs = 10_000): Promise<DeviceDescription> {
  let client: VfioUserClient;
  try {
    client = VfioUserClient.connect(socket);
  } catch (err) {
    throw new Error(`cannot reach a daemon at ${socket}: ${(err as Error).message}`);
  }
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no answer from ${socket} within ${timeoutMs} ms (is the daemon scrubbing its memory?)`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([ask(client, socket, numa), timeout]);
  } catch (err) {
    if (/closed/.test((err as Error).message)) {
      throw new Error(
        `the daemon at ${socket} closed the connection: it serves one client at a time (is a VM attached?), ` +
          'or this uid is not allowed; describe the device from its flags instead',
      );
    }
    throw err;
  } finally {
    clearTimeout(timer);
    client.close();
  }
}

async function ask(client: VfioUserClient, socket: string, numa: NumaLayout): Promise<DeviceDescription> {
  await client.negotiate({ ...QEMU_LIKE_CAPS, maxMsgFds: 0 });
  const info = await client.deviceInfo();
  const cfg = await client.regionRead(RegionIndex.CONFIG, 0, 64);
  const bars: DeviceDescription['bars'] = [];
  for (let i = RegionIndex.BAR0; i <= RegionIndex.BAR5 && i < info.numRegions; i++) {
    const { info: r, fd } = await client.regionInfo(i);
    if (fd !== null) native.closeFd(fd);
    if (r.size === 0) continue;
    const low = cfg.readUInt32LE(0x10 + 4 * i);
    bars.push({ index: i, bytes: r.size, is64bit: (low & 0x6) === 0x4, prefetchable: (low & 0x8) !== 0, role: 'other' });
  }
  // The kernel's layouts: the usable memory at BAR4 (gh, gb) or BAR2 (bar2); with both, BAR2 is gh's reserved part.
  const memoryBar = (i: number) => bars.find((b) => b.index === i && b.is64bit && b.prefetchable);
  const bar2 = memoryBar(RegionIndex.BAR2);
  const bar4 = memoryBar(RegionIndex.BAR4);
  const usable = bar4 ?? bar2;
  if (usable === undefined) throw new Error(`the device at ${socket} has no 64-bit prefetchable BAR2 or BAR4: it carries no coherent memory`);
  usable.role = 'coherent-memory';
  if (bar4 && bar2) bar2.role = 'reserved-memory';
  const layout: LayoutName = bar4 ? (bar2 ? 'gh' : 'gb') : 'bar2';
  const registers = bars.find((b) => b.index === RegionIndex.BAR0);
  if (registers !== undefined) registers.role = 'registers';

  const vendorId = cfg.readUInt16LE(0x00);
  const deviceId = cfg.readUInt16LE(0x02);
  return {
    source: 'socket',
    socket,
    device: {
      vendorId: hexId(vendorId),
      deviceId: hexId(deviceId),
      subsystemVendorId: hexId(cfg.readUInt16LE(0x2c)),
      subsystemId: hexId(cfg.readUInt16LE(0x2e)),
      classCode: hexId(cfg.readUIntLE(0x09, 3), 6),
      name: productName(vendorId, deviceId),
    },
    coherentMemory: { bar: usable.index, barBytes: usable.bytes, memoryBytes: null, paddingBytes: null, layout, totalMemoryBytes: null, backing: null },
    bars,
    guestNuma: numa,
    pciHole64Bytes: pciHole64For(bars.filter((b) => b.is64bit).map((b) => b.bytes)),
    unknown: [
      'memoryBytes: the memory is the BAR rounded down to what is real; only the mmap areas show where it ends, and they are sent with an fd, which describe declines so that it cannot change the device (pass the daemon\'s flags, or read nvgrace_vfio_user_aperture_memory_bytes from its metrics)',
      'backing: the file or device behind the memory is not part of the vfio-user protocol (the daemon\'s flags or its device_info metric say it)',
    ],
  };
}
