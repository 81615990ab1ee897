// Unit tests of the guest-test helpers; no QEMU needed.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { nvgraceBarCheckArgs, patternWord, shellQuote } from './bar-check.js';
import { guestArgs, initExitStatus, parseBarCheckDone, parseChecks } from './boot.js';
import { elfArch, isStaticElf, newcArchive } from './initramfs.js';
import { parseQemuVersion, versionAtLeast, type QemuInstall } from './qemu-env.js';

function hasCpio(): boolean {
  try {
    execFileSync('cpio', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('newcArchive', () => {
  const archive = newcArchive([
    { name: '.', mode: 0o040755 },
    { name: 'bin', mode: 0o040755 },
    { name: 'bin/hello', mode: 0o100755, data: Buffer.from('hi there\n') },
    { name: 'bin/sh', mode: 0o120777, data: Buffer.from('hello') },
    { name: 'dev', mode: 0o040755 },
    { name: 'dev/console', mode: 0o020600, rdevMajor: 5, rdevMinor: 1 },
  ]);

  it('writes 4-byte aligned newc records ending in TRAILER!!!', () => {
    expect(archive.subarray(0, 6).toString()).toBe('070701');
    expect(archive.length % 4).toBe(0);
    expect(archive.includes(Buffer.from('TRAILER!!!\0'))).toBe(true);
  });

  it.skipIf(!hasCpio())('is read back by GNU cpio', () => {
    const dir = mkdtempSync(join(tmpdir(), 'newc-'));
    try {
      const listing = execFileSync('cpio', ['-t', '-v', '--quiet'], { input: archive }).toString();
      expect(listing).toMatch(/^-rwxr-xr-x .* bin\/hello$/m);
      expect(listing).toMatch(/^lrwxrwxrwx .* bin\/sh -> hello$/m);
      expect(listing).toMatch(/^crw------- .* 5,\s+1 .* dev\/console$/m);
      writeFileSync(join(dir, 'a.cpio'), archive);
      execFileSync('cpio', ['-i', '-d', '--quiet', '--no-absolute-filenames', '-F', 'a.cpio', 'bin/hello'], {
        cwd: dir,
      });
      expect(readFileSync(join(dir, 'bin/hello'), 'utf8')).toBe('hi there\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('isStaticElf', () => {
  it('tells a dynamic executable (node) from non-ELF data', () => {
    expect(isStaticElf(readFileSync(process.execPath))).toBe(false);
    expect(isStaticElf(Buffer.from('#!/bin/sh\n'))).toBe(false);
  });
});

describe('elfArch', () => {
  const header = (machine: number) => {
    const b = Buffer.alloc(64);
    b.writeUInt32BE(0x7f454c46, 0);
    b[4] = 2; // 64-bit
    b[5] = 1; // little-endian
    b.writeUInt16LE(machine, 18);
    return b;
  };
  it('names x86-64 and aarch64 executables, nothing else', () => {
    expect(elfArch(header(62))).toBe('x86_64');
    expect(elfArch(header(183))).toBe('aarch64');
    expect(elfArch(header(40))).toBeNull(); // 32-bit arm
    expect(elfArch(Buffer.from('#!/bin/sh\n'))).toBeNull();
    expect(elfArch(readFileSync(process.execPath))).toBe(process.arch === 'arm64' ? 'aarch64' : 'x86_64');
  });
});

describe('guest QEMU arguments per architecture', () => {
  const install = (arch: QemuInstall['arch']): QemuInstall => ({
    arch,
    command: 'qemu',
    prefixArgs: [],
    version: '11.1.3',
    kernel: `/k/${arch}`,
    arm64Kernels: arch === 'aarch64' ? { '4k': '/k/arm64-4k', '16k': '/k/arm64-16k' } : null,
    root: null,
    env: {},
    source: 'env',
  });
  const after = (args: string[], flag: string) => args[args.indexOf(flag) + 1];

  it('x86-64: q35, ttyS0, memfd RAM shared', () => {
    const a = guestArgs({ qemu: install('x86_64'), initrd: '/i' });
    expect(after(a, '-machine')).toBe('q35,memory-backend=mem0');
    expect(a).not.toContain('-cpu');
    expect(after(a, '-append')).toMatch(/^console=ttyS0 /);
    expect(after(a, '-kernel')).toBe('/k/x86_64');
    expect(after(a, '-object')).toBe('memory-backend-memfd,id=mem0,size=512M,share=on');
  });

  it('arm64: virt, -cpu max, ttyAMA0, no NIC, the kernel of the page size asked for', () => {
    const a = guestArgs({ qemu: install('aarch64'), initrd: '/i', pageSize: '16k', memoryMiB: 1024 });
    expect(after(a, '-machine')).toBe('virt,memory-backend=mem0');
    expect(after(a, '-cpu')).toBe('max,pauth-impdef=on');
    expect(after(a, '-nic')).toBe('none');
    expect(after(a, '-append')).toMatch(/^console=ttyAMA0 /);
    expect(after(a, '-kernel')).toBe('/k/arm64-16k');
    expect(after(a, '-object')).toBe('memory-backend-memfd,id=mem0,size=1024M,share=on');
    expect(after(guestArgs({ qemu: install('aarch64'), initrd: '/i' }), '-kernel')).toBe('/k/arm64-4k');
    expect(after(guestArgs({ qemu: install('aarch64'), initrd: '/i', ownMemory: true }), '-machine')).toBe('virt');
  });
});

describe('bar-check output parsing', () => {
  const out = [
    'SeaBIOS (version x)\r',
    'DEVICE 0000:00:03.0 10de:2342\r',
    'CHECK enable PASS /sys/bus/pci/devices/0000:00:03.0/enable\r',
    '[    2.5] some kernel noise CHECK bar2-size FAIL size=0x0 expected=0x8000000\r',
    'CHECK padding-write@0x6000000 PASS\r',
    'BAR-CHECK DONE pass=2 fail=1\r',
    'GUEST-INIT END status=1\r',
    '',
  ].join('\n');

  it('parses CHECK lines, totals and the init status', () => {
    expect(parseChecks(out)).toEqual([
      { name: 'enable', pass: true, details: '/sys/bus/pci/devices/0000:00:03.0/enable' },
      { name: 'bar2-size', pass: false, details: 'size=0x0 expected=0x8000000' },
      { name: 'padding-write@0x6000000', pass: true, details: '' },
    ]);
    expect(parseBarCheckDone(out)).toEqual({ pass: 2, fail: 1 });
    expect(initExitStatus(out)).toBe(1);
    expect(parseBarCheckDone('nothing')).toBeNull();
    expect(initExitStatus('nothing')).toBeNull();
  });
});

describe('bar-check host helpers', () => {
  it('patternWord follows (uint32)((o / 4) * 0x9e3779b1 + seed)', () => {
    expect(patternWord(0, 5)).toBe(5);
    expect(patternWord(4, 0)).toBe(0x9e3779b1);
    expect(patternWord(8, 0)).toBe(0x3c6ef362);
    expect(patternWord(0x1000, 0xffffffff)).toBe((((0x400 * 0x9e3779b1) % 2 ** 32) + 0xffffffff) % 2 ** 32);
  });

  it('nvgraceBarCheckArgs checks sizes, flags, values and padding', () => {
    const args = nvgraceBarCheckArgs({
      memSize: 96 * 2 ** 20,
      bar2Size: 128 * 2 ** 20,
      expect: [[0x1000, 0xdeadbeef]],
      write: [[0x2000, -1]],
    });
    expect(shellQuote(args)).toBe(
      '--vendor 0x10de --device 0x2342 --mem-size 0x6000000 --bar-size 0:0x1000000 ' +
        '--bar-flags 0:mem64,noprefetch --bar-size 2:0x8000000 --bar-flags 2:mem64,prefetch ' +
        '--expect 0x1000:0xdeadbeef --write 0x2000:0xffffffff --padding-auto',
    );
    expect(shellQuote(["it's", 'a b', 'plain'])).toBe(`'it'\\''s' 'a b' plain`);
  });
});

describe('QEMU version checks', () => {
  it('parses and compares versions', () => {
    expect(parseQemuVersion('QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-1~bpo13+1)\n')).toBe('11.1.3');
    expect(parseQemuVersion('QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)')).toBe('7.2.19');
    expect(parseQemuVersion('nope')).toBeNull();
    expect(versionAtLeast('11.1.3', '10.1')).toBe(true);
    expect(versionAtLeast('10.1', '10.1')).toBe(true);
    expect(versionAtLeast('10.0.9', '10.1')).toBe(false);
    expect(versionAtLeast('7.2.19', '10.1')).toBe(false);
  });
});
