import { afterEach, describe, expect, it } from 'vitest';
import { serviceDropInHint } from '../../src/backends/service-hint.js';

const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(code), { code });

describe('serviceDropInHint', () => {
  const saved = process.env['INVOCATION_ID'];
  afterEach(() => {
    if (saved === undefined) delete process.env['INVOCATION_ID'];
    else process.env['INVOCATION_ID'] = saved;
  });

  it('names the drop-in for a refusal under systemd', () => {
    process.env['INVOCATION_ID'] = '0123456789abcdef0123456789abcdef';
    for (const code of ['EPERM', 'EACCES', 'EROFS']) {
      expect(serviceDropInHint(errno(code), 'devmem.conf', 'DeviceAllow=/dev/mem rw')).toBe(
        'the service needs the devmem.conf drop-in (DeviceAllow=/dev/mem rw; see systemd/drop-ins/)',
      );
    }
  });

  it('says nothing outside a service or for other errors', () => {
    delete process.env['INVOCATION_ID'];
    expect(serviceDropInHint(errno('EPERM'), 'devmem.conf', 'x')).toBeNull();
    process.env['INVOCATION_ID'] = '0123456789abcdef0123456789abcdef';
    expect(serviceDropInHint(errno('ENOENT'), 'devmem.conf', 'x')).toBeNull();
    expect(serviceDropInHint(new Error('no code'), 'devmem.conf', 'x')).toBeNull();
  });
});
