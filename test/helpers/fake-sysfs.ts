import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A temporary sysfs-like tree holding `files` (path → value, written with a newline); returns its root. */
export function fakeSysfs(files: Record<string, string>): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nvgrace-sysfs-'));
  for (const [p, v] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    fs.writeFileSync(path.join(root, p), v + '\n');
  }
  return root;
}
