// The nested test's initramfs helpers that need no QEMU: module resolution and paths.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { modulesDirFor, resolveModules } from './node-initramfs.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function modulesDir(dep: string, builtin = ''): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'modules-'));
  dirs.push(d);
  fs.writeFileSync(path.join(d, 'modules.dep'), dep);
  fs.writeFileSync(path.join(d, 'modules.builtin'), builtin);
  return d;
}

describe('guest kernel modules for the nested test', () => {
  it('lists dependencies first, each once, whatever the dash or underscore', () => {
    const d = modulesDir(
      [
        'kernel/drivers/vfio/vfio.ko.xz:',
        'kernel/drivers/vfio/vfio_iommu_type1.ko.xz: kernel/drivers/vfio/vfio.ko.xz',
        'kernel/virt/lib/irqbypass.ko.xz:',
        'kernel/drivers/vfio/pci/vfio-pci-core.ko.xz: kernel/drivers/vfio/vfio.ko.xz kernel/virt/lib/irqbypass.ko.xz',
        'kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/pci/vfio-pci-core.ko.xz kernel/drivers/vfio/vfio.ko.xz kernel/virt/lib/irqbypass.ko.xz',
        '',
      ].join('\n'),
    );
    expect(resolveModules(d, ['vfio', 'vfio-iommu-type1', 'vfio_pci'])).toEqual([
      'kernel/drivers/vfio/vfio.ko.xz',
      'kernel/drivers/vfio/vfio_iommu_type1.ko.xz',
      'kernel/virt/lib/irqbypass.ko.xz',
      'kernel/drivers/vfio/pci/vfio-pci-core.ko.xz',
      'kernel/drivers/vfio/pci/vfio-pci.ko.xz',
    ]);
  });

  it('leaves out built-in modules and refuses unknown ones', () => {
    const d = modulesDir('kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/vfio.ko\n', 'kernel/drivers/vfio/vfio.ko\n');
    expect(resolveModules(d, ['vfio-pci'])).toEqual(['kernel/drivers/vfio/pci/vfio-pci.ko']);
    expect(() => resolveModules(d, ['iommufd'])).toThrow(/iommufd is neither in .*modules.dep nor built in/);
  });

  it('finds the module tree beside a kernel in a root, else the host one', () => {
    expect(modulesDirFor('/var/cache/x/qemu-root/boot/vmlinuz-7.3.4+deb13-cloud-amd64')).toBe('/var/cache/x/qemu-root/lib/modules/7.3.4+deb13-cloud-amd64');
    expect(modulesDirFor('/tmp/vmlinuz-6.1.0-9-amd64')).toBe('/lib/modules/6.1.0-9-amd64');
  });
});
