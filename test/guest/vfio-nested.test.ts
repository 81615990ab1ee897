// The nested pass-through test: an L1 Linux guest under QEMU (TCG) with an Intel IOMMU and
// QEMU's edu device behind a PCIe root port. Inside L1, edu is bound to vfio-pci, our
// daemon runs with --bar0 vfio:<edu> and our vfio-user client checks edu through it:
// registers, the zero-copy BAR0 mapping, DMA through the IOMMU, MSI, reset, DMA_UNMAP and
// a reconnect. Then edu is unbound and the daemon serves it with --bar0 sysfs:.
import { afterEach, describe, expect, it } from 'vitest';
import { bootGuest, describeBoot } from './boot.js';
import { GUEST_PROJECT_DIR, buildNodeInitramfs, type NodeInitramfs } from './node-initramfs.js';
import { useQemu } from './qemu-fixture.js';

const qemu = useQemu();

/** vfio-pci and the type1 IOMMU with what they need (irqbypass, vfio, vfio-pci-core). */
const MODULES = ['vfio', 'vfio_iommu_type1', 'vfio-pci'];

/**
 * L1's script. Every line the host looks at starts with NESTED or L1CHECK. Times come from
 * /proc/uptime (busybox date has no sub-second format).
 */
function l1Script(moduleFiles: string[]): string {
  const serve = `node ${GUEST_PROJECT_DIR}/bin/nvgrace-vfio-user.js serve --aperture-size 1M`;
  const check = `node ${GUEST_PROJECT_DIR}/test/vfio/l1-check.mjs`;
  return `
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "NESTED $*"; }
for m in ${moduleFiles.join(' ')}; do
  case $m in
    *.xz) xzcat /lib/modules/$m > /tmp/mod.ko && insmod /tmp/mod.ko || say "insmod-failed $m" ;;
    *) insmod /lib/modules/$m || say "insmod-failed $m" ;;
  esac
done
BDF=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor):$(cat $d/device)" = "0x1234:0x11e8" ] && BDF=$(basename $d)
done
say "edu=$BDF group=$(basename "$(readlink /sys/bus/pci/devices/$BDF/iommu_group)") reset=$(cat /sys/bus/pci/devices/$BDF/reset_method)"

# Not yet bound to vfio-pci: the operator gets one line and exit 1.
${serve} --socket /tmp/unbound.sock --bar0 vfio:$BDF 2>/tmp/unbound.err
say "unbound-exit=$?"
say "unbound-stderr-lines=$(wc -l < /tmp/unbound.err)"
say "unbound-stderr: $(cat /tmp/unbound.err)"

echo vfio-pci > /sys/bus/pci/devices/$BDF/driver_override
echo $BDF > /sys/bus/pci/drivers_probe
say "driver=$(basename "$(readlink /sys/bus/pci/devices/$BDF/driver)")"

# A GPU's readiness wait, forced on edu, whose registers there read ~0: a clear timeout, exit 1.
${serve} --socket /tmp/ready.sock --bar0 vfio:$BDF --ready-wait on --ready-timeout 1 2>/tmp/ready.err
say "ready-exit=$?"
say "ready-stderr: $(cat /tmp/ready.err | tail -n 1)"

waitsock() { i=0; while [ ! -S $1 ] && kill -0 $2 2>/dev/null && [ $i -lt 240 ]; do sleep 0.25; i=$((i+1)); done; }
cmdreg() { od -An -tx2 -j4 -N2 /sys/bus/pci/devices/$BDF/config | tr -d ' '; }

T0=$(up)
${serve} --socket /tmp/vfio.sock --bar0 vfio:$BDF 2>/tmp/vfio.log &
DPID=$!
waitsock /tmp/vfio.sock $DPID
T1=$(up)
${check} vfio /tmp/vfio.sock
say "vfio-check-exit=$?"
T2=$(up)
kill -TERM $DPID; wait $DPID
say "vfio-daemon-exit=$?"
say "timing daemon-start=$T0 listening=$T1 checked=$T2"
sed 's/^/NESTED vfio-log: /' /tmp/vfio.log

echo $BDF > /sys/bus/pci/drivers/vfio-pci/unbind
echo > /sys/bus/pci/devices/$BDF/driver_override
say "unbound-enable=$(cat /sys/bus/pci/devices/$BDF/enable) command=$(cmdreg)"
${serve} --socket /tmp/sysfs.sock --bar0 sysfs:$BDF 2>/tmp/sysfs.log &
DPID=$!
waitsock /tmp/sysfs.sock $DPID
say "sysfs-enable=$(cat /sys/bus/pci/devices/$BDF/enable) command=$(cmdreg)"
${check} sysfs /tmp/sysfs.sock
say "sysfs-check-exit=$?"
kill -TERM $DPID; wait $DPID
say "sysfs-daemon-exit=$?"
sed 's/^/NESTED sysfs-log: /' /tmp/sysfs.log
`;
}

function nested(output: string, key: string): string | null {
  const m = new RegExp(`NESTED ${key}=(\\S*)`).exec(output);
  return m ? m[1]! : null;
}

describe('nested: the daemon in an L1 guest passes QEMU edu through from vfio-pci', () => {
  let image: NodeInitramfs | null = null;
  afterEach(() => {
    image?.remove();
    image = null;
  });

  it('registers, zero-copy BAR0, DMA through the IOMMU, MSI, reset, unmap and reconnect; sysfs registers', async (ctx) => {
    const q = qemu.require(ctx);
    const built = Date.now();
    image = buildNodeInitramfs({ initCommands: l1Script, kernel: q.kernel, modules: MODULES });
    const buildMs = Date.now() - built;

    const r = await bootGuest({
      qemu: q,
      initrd: image.path,
      memoryMiB: 1024,
      timeoutMs: 200_000,
      appendArgs: ['intel_iommu=on'],
      extraArgs: [
        '-cpu', 'max',
        // Interrupt remapping on, so vfio_iommu_type1 needs no allow_unsafe_interrupts (TCG needs no split irqchip).
        '-device', 'intel-iommu,intremap=on',
        // Behind a root port edu is alone on its bus: vfio-pci can reset it with a secondary bus reset.
        '-device', 'pcie-root-port,id=rp0,slot=1',
        '-device', 'edu,bus=rp0',
      ],
    });
    const why = describeBoot(r, 120);
    const timing = /NESTED timing daemon-start=([\d.]+) listening=([\d.]+) checked=([\d.]+)/.exec(r.output);
    console.info(
      `nested vfio test: image ${(image.bytes / 2 ** 20).toFixed(0)} MiB built in ${buildMs} ms, guest ran ${r.durationMs} ms` +
        (timing ? `; in L1: daemon listening after ${(Number(timing[2]) - Number(timing[1])).toFixed(1)} s, checks took ${(Number(timing[3]) - Number(timing[2])).toFixed(1)} s` : ''),
    );
    if (process.env.NVGRACE_NESTED_DUMP) console.info(r.output);
    expect(r.timedOut, why).toBe(false);
    expect(r.output, why).not.toMatch(/NESTED insmod-failed/);
    expect(r.output, why).toMatch(/NESTED edu=0000:01:00\.0 group=\d+ reset=bus/);

    // The operator's error: one line naming the problem and the fix.
    expect(nested(r.output, 'unbound-exit'), why).toBe('1');
    expect(nested(r.output, 'unbound-stderr-lines'), why).toBe('1');
    expect(r.output, why).toMatch(/NESTED unbound-stderr: .*device 0000:01:00\.0 is bound to no driver, not vfio-pci: .*driver_override/);
    expect(nested(r.output, 'driver'), why).toBe('vfio-pci');

    expect(nested(r.output, 'ready-exit'), why).toBe('1');
    expect(r.output, why).toMatch(/NESTED ready-stderr: .*device not ready after 1 s: readiness registers read 0x1498=0xffffffff 0x200bc=0xffffffff/);

    const checks = [...r.output.matchAll(/L1CHECK (\S+) (PASS|FAIL)(.*)/g)].map((m) => ({ name: m[1]!, pass: m[2] === 'PASS', details: m[3]!.trim() }));
    const failed = checks.filter((c) => !c.pass && c.name !== 'DONE').map((c) => `${c.name} ${c.details}`);
    expect(failed, why).toEqual([]);
    const names = checks.map((c) => c.name);
    for (const must of [
      'device-info', 'config-identity', 'config-command', 'config-bar0-type', 'config-bar2-aperture', 'config-msi-capability',
      'bar0-region', 'bar0-mmap-id', 'bar0-mmap-liveness', 'bar2-region', 'id-register', 'liveness-inverse',
      'dma-roundtrip', 'msi-on-factorial', 'reset', 'dma-unmap-blocks', 'reconnect-remaps',
    ]) {
      expect(names, why).toContain(must);
    }
    // After DMA_UNMAP edu's write faulted in L1's IOMMU instead of reaching client memory.
    expect(r.output, why).toMatch(/DMAR: \[DMA Write[^\]]*\] Request device \[0000:01:00\.0\] fault addr 0x102000/);
    expect(nested(r.output, 'vfio-check-exit'), why).toBe('0');
    expect(nested(r.output, 'vfio-daemon-exit'), why).toBe('0');
    // sysfs: the registers again (id and liveness a second time), through resource0.
    expect(names.filter((n) => n === 'id-register').length, why).toBe(2);
    expect(nested(r.output, 'sysfs-check-exit'), why).toBe('0');
    expect(nested(r.output, 'sysfs-daemon-exit'), why).toBe('0');
  }, 300_000);
});
