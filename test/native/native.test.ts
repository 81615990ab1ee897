import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import * as mod from '../../src/native/native.js';
import { Limits } from '../../src/wire/constants.js';

const constants = [
  'READABLE',
  'WRITABLE',
  'DISCONNECT',
  'MFD_ALLOW_SEALING',
  'MFD_HUGETLB',
  'MFD_HUGE_2MB',
  'MFD_HUGE_1GB',
  'PROT_READ',
  'PROT_WRITE',
  'MAP_SHARED',
  'MAP_PRIVATE',
  'MAP_ANONYMOUS',
  'MAP_NORESERVE',
  'MAP_POPULATE',
  'EFD_NONBLOCK',
  'EFD_SEMAPHORE',
] as const;

const functions = [
  'listenUnix',
  'connectUnix',
  'accept',
  'peerCred',
  'socketPair',
  'recvMsg',
  'sendMsg',
  'closeFd',
  'memfdCreate',
  'mmap',
  'munmap',
  'eventfd',
  'eventfdWrite',
  'eventfdRead',
  'fillMemory',
  'copyMemory',
  'fallocatePunchHole',
  'fdCount',
  'ioctl',
  'pageSize',
  'createPoller',
] as const;

const tmp = mkdtempSync(join(tmpdir(), 'nvgrace-loader-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('native loader', () => {
  it('exports every function and constant of the binding', () => {
    for (const name of functions) expect(typeof mod.native[name], name).toBe('function');
    for (const name of constants) {
      expect(typeof mod.native[name], name).toBe('number');
      expect(mod[name], name).toBe(mod.native[name]);
    }
    expect(mod.MAP_SHARED).toBe(1);
    expect(mod.MAP_PRIVATE).toBe(2);
    expect(mod.PROT_READ | mod.PROT_WRITE).toBe(3);
  });

  it('takes as many fds per message as the protocol advertises (NV_MAX_FDS is Limits.MAX_MSG_FDS)', () => {
    expect(mod.native.MAX_FDS).toBe(Limits.MAX_MSG_FDS);
  });

  it('resolves the addon two levels above the module', () => {
    const root = fileURLToPath(new URL('../../', import.meta.url));
    expect(mod.NATIVE_BINDING_PATH).toBe(join(root, 'build/Release/nvgrace_native.node'));
  });

  it('says how to build the addon when it is missing', async () => {
    // The same module, two levels below a root that has no build/.
    const dir = join(tmp, 'src', 'native');
    mkdirSync(dir, { recursive: true });
    const copy = join(dir, 'native.ts');
    copyFileSync(fileURLToPath(new URL('../../src/native/native.ts', import.meta.url)), copy);
    await expect(import(copy)).rejects.toThrow(
      'native binding not built: run `npm install` (or `npx node-gyp rebuild`)',
    );
  });

  it('isSyscallError narrows errors thrown by the binding', () => {
    let err: unknown;
    try {
      mod.native.connectUnix(join(tmp, 'nothing-here.sock'));
    } catch (e) {
      err = e;
    }
    expect(mod.isSyscallError(err)).toBe(true);
    expect(mod.isSyscallError(err, 'ENOENT')).toBe(true);
    expect(mod.isSyscallError(err, 'EACCES')).toBe(false);
    expect(mod.isSyscallError(new Error('plain'))).toBe(false);
    if (mod.isSyscallError(err)) expect(err.path).toBe(join(tmp, 'nothing-here.sock'));
  });
});
