import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** systemd/ at the package root (this file is src/cli/ or dist/cli/). */
export const UNITS_DIR = fileURLToPath(new URL('../../systemd', import.meta.url));
/** bin/nvgrace-vfio-user.js at the package root. */
export const CLI_PATH = fileURLToPath(new URL('../../bin/nvgrace-vfio-user.js', import.meta.url));

export const SERVICE = 'nvgrace-vfio-user@.service';
export const SOCKET = 'nvgrace-vfio-user@.socket';
export const EXAMPLE_ENV = 'example.env';

export interface InstallOptions {
  /** Root to install under ("/" for the running system, a staging folder for packaging). */
  prefix: string;
  /** The CLI ExecStart runs; default this package's own. */
  cli?: string;
  /** The Node.js that runs it; default the one running now. */
  node?: string;
}

export interface Installed {
  files: string[];
  execStart: string;
  warnings: string[];
}

/** systemd's quoting for one ExecStart word. */
function execWord(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `"${word.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** ExecStart runs the installed CLI with the Node.js installing it, both by absolute path. */
export function execStartLine(node: string, cli: string): string {
  return `ExecStart=${execWord(node)} ${execWord(cli)} serve`;
}

/**
 * Copies the units into PREFIX/etc/systemd/system and the example flags into
 * PREFIX/etc/nvgrace-vfio-user/example.env, with ExecStart pointing at this
 * installation. Instance files (gpu0.env, ...) are never touched.
 */
export function installUnits(o: InstallOptions): Installed {
  const node = path.resolve(o.node ?? process.execPath);
  const cli = fs.realpathSync(o.cli ?? CLI_PATH);
  const warnings: string[] = [];
  // ProtectHome=yes hides these folders from the service: ExecStart would not be found.
  if (/^\/(home|root|run\/user)(\/|$)/.test(cli) || /^\/(home|root|run\/user)(\/|$)/.test(node)) {
    warnings.push(`${cli} or ${node} is under /home, /root or /run/user, which the service cannot see (ProtectHome=yes): install the package elsewhere, e.g. npm install -g`);
  }
  const unitDir = path.join(o.prefix, 'etc/systemd/system');
  const envDir = path.join(o.prefix, 'etc/nvgrace-vfio-user');
  fs.mkdirSync(unitDir, { recursive: true });
  fs.mkdirSync(envDir, { recursive: true, mode: 0o755 });

  const execStart = execStartLine(node, cli);
  const service = fs.readFileSync(path.join(UNITS_DIR, SERVICE), 'utf8');
  if (!/^ExecStart=.*$/m.test(service)) throw new Error(`${SERVICE} has no ExecStart= line`);
  const files: string[] = [];
  const write = (file: string, text: string, mode: number) => {
    fs.writeFileSync(file, text, { mode });
    fs.chmodSync(file, mode);
    files.push(file);
  };
  write(path.join(unitDir, SERVICE), service.replace(/^ExecStart=.*$/m, execStart), 0o644);
  write(path.join(unitDir, SOCKET), fs.readFileSync(path.join(UNITS_DIR, SOCKET), 'utf8'), 0o644);
  write(path.join(envDir, EXAMPLE_ENV), fs.readFileSync(path.join(UNITS_DIR, EXAMPLE_ENV), 'utf8'), 0o644);
  return { files, execStart, warnings };
}
