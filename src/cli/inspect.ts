import { VfioUserClient } from '../client/client.js';
import { native } from '../native/native.js';
import { RegionFlag, RegionIndex } from '../wire/constants.js';
import { formatSize, hex } from './parse.js';

const REGION_NAMES = ['BAR0', 'BAR1', 'BAR2', 'BAR3', 'BAR4', 'BAR5', 'ROM', 'CONFIG', 'VGA'];
const IRQ_NAMES = ['INTx', 'MSI', 'MSI-X', 'ERR', 'REQ'];

/** Connects to a running daemon as a client and describes the device it serves. */
export async function inspect(socket: string, write: (line: string) => void): Promise<number> {
  const client = VfioUserClient.connect(socket);
  try {
    const version = await client.negotiate();
    write(`server: vfio-user ${version.major}.${version.minor} ${JSON.stringify(version.capabilities ?? {})}`);
    const dev = await client.deviceInfo();
    write(`device: flags ${hex(dev.flags)} (${dev.flags & 2 ? 'PCI' : '?'}${dev.flags & 1 ? ', reset' : ''}), ${dev.numRegions} regions, ${dev.numIrqs} irq types`);
    for (let i = 0; i < dev.numRegions; i++) {
      const { info, fd } = await client.regionInfo(i);
      if (fd !== null) native.closeFd(fd);
      if (info.size === 0) continue;
      const flags = [
        info.flags & RegionFlag.READ ? 'read' : '',
        info.flags & RegionFlag.WRITE ? 'write' : '',
        info.flags & RegionFlag.MMAP ? 'mmap' : '',
      ].filter(Boolean);
      write(`region ${i} ${REGION_NAMES[i] ?? ''}: size ${formatSize(info.size)} (${hex(info.size)}) [${flags.join(',')}] fd-offset ${hex(info.offset)}`);
      const areas = info.sparseAreas ?? (info.flags & RegionFlag.MMAP ? [{ offset: 0, size: info.size }] : []);
      for (const a of areas) write(`  mmap area ${hex(a.offset)}..${hex(a.offset + a.size)} (${formatSize(a.size)})`);
    }
    for (let i = 0; i < dev.numIrqs; i++) {
      const irq = await client.irqInfo(i);
      write(`irq ${i} ${IRQ_NAMES[i] ?? ''}: count ${irq.count} flags ${hex(irq.flags)}`);
    }
    const cfg = await client.regionRead(RegionIndex.CONFIG, 0, 64);
    write(`config: vendor ${hex(cfg.readUInt16LE(0), 4)} device ${hex(cfg.readUInt16LE(2), 4)} class ${hex(cfg.readUIntLE(9, 3), 6)} rev ${hex(cfg[8]!, 2)}`);
    for (let bar = 0; bar < 6; bar++) {
      const v = cfg.readUInt32LE(0x10 + 4 * bar);
      if (v !== 0) write(`  BAR${bar} register ${hex(v, 8)}`);
    }
    for (let row = 0; row < 64; row += 16) {
      write(`  ${row.toString(16).padStart(2, '0')}: ${[...cfg.subarray(row, row + 16)].map((b) => b.toString(16).padStart(2, '0')).join(' ')}`);
    }
    return 0;
  } finally {
    client.close();
  }
}
