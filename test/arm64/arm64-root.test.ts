// The pure parts of the arm64 root helper: paths inside the root and the command that
// enters it. (`npm run test:arm64` is what proves the root itself.)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { arm64Command, arm64RootDir, DEFAULT_ARM64_ROOT, resolveInRoot, trackedFiles } from './arm64-root.js';

describe('arm64 root helper', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-arm64-'));
    fs.mkdirSync(path.join(root, 'usr/lib/aarch64-linux-gnu'), { recursive: true });
    fs.writeFileSync(path.join(root, 'usr/lib/aarch64-linux-gnu/libc.so.6'), '');
    fs.symlinkSync('usr/lib', path.join(root, 'lib')); // merged /usr, relative
    fs.symlinkSync('/usr/lib/aarch64-linux-gnu/libc.so.6', path.join(root, 'usr/lib/aarch64-linux-gnu/libc.so.6.link')); // absolute
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('resolves paths inside the root, symlinks taken relative to the root, never the host', () => {
    const libc = path.join(root, 'usr/lib/aarch64-linux-gnu/libc.so.6');
    expect(resolveInRoot(root, '/lib/aarch64-linux-gnu/libc.so.6')).toBe(libc);
    expect(resolveInRoot(root, '/lib/aarch64-linux-gnu/libc.so.6.link')).toBe(libc);
    expect(resolveInRoot(root, '/usr/lib/missing/x')).toBe(path.join(root, 'usr/lib/missing/x'));
    fs.symlinkSync('loop', path.join(root, 'loop'));
    expect(() => resolveInRoot(root, '/loop')).toThrow(/symlink loop/);
  });

  it('enters the root in a private mount namespace with a clean environment and the page size asked for', () => {
    const { file, args } = arm64Command(root, ['node', '-v'], { cwd: '/work/x', pageSize: 16384, env: { FOO: 'bar' } });
    expect(file).toBe('unshare');
    expect(args.slice(0, 4)).toEqual(['--mount', '--propagation', 'private', '--']);
    const script = args[6]!;
    expect(script).toMatch(/mount -t proc proc "\$r\/proc"/);
    expect(script).toMatch(/exec chroot "\$r" \/usr\/bin\/env -i "\$@"/);
    expect(args.slice(8, 10)).toEqual([root, '/work/x']);
    expect(args).toContain('QEMU_PAGESIZE=16384');
    expect(args).toContain('FOO=bar');
    expect(args).toContain('HOME=/root');
    expect(args.slice(-3)).toEqual(['/work/x', 'node', '-v']);
    expect(arm64Command(root, ['true']).args.some((a) => a.startsWith('QEMU_PAGESIZE='))).toBe(false);
  });

  it('takes the root from the argument, then NVGRACE_ARM64_ROOT, then the default, and copies git-tracked files only', () => {
    const saved = process.env['NVGRACE_ARM64_ROOT'];
    try {
      delete process.env['NVGRACE_ARM64_ROOT'];
      expect(arm64RootDir()).toBe(DEFAULT_ARM64_ROOT);
      process.env['NVGRACE_ARM64_ROOT'] = '/tmp/elsewhere/';
      expect(arm64RootDir()).toBe('/tmp/elsewhere');
      expect(arm64RootDir('/x/y')).toBe('/x/y');
    } finally {
      if (saved === undefined) delete process.env['NVGRACE_ARM64_ROOT'];
      else process.env['NVGRACE_ARM64_ROOT'] = saved;
    }
    const checkout = path.resolve(import.meta.dirname, '../..');
    const files = trackedFiles(checkout);
    expect(files).toContain('package-lock.json');
    expect(files).toContain('test/arm64/provision-arm64-root.sh');
    expect(files.some((f) => f.startsWith('node_modules/') || f.startsWith('dist/'))).toBe(false);
  });
});
