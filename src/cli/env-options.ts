import type { Command, Option } from 'commander';

export const ENV_PREFIX = 'NVGRACE_VFIO_USER_';

/** --aperture-size → NVGRACE_VFIO_USER_APERTURE_SIZE */
export function envName(longFlag: string): string {
  return ENV_PREFIX + longFlag.replace(/^--/, '').replace(/-/g, '_').toUpperCase();
}

/**
 * Lets every long option of `cmd` also come from an environment variable, so
 * a systemd EnvironmentFile= can hold the flags (one variable per flag, unset
 * ones simply absent). A flag on the command line wins over the environment.
 * Hooks addOption, which .option() goes through too: it must run before the
 * options are added, because commander wires the variable in at that point.
 */
export function optionsFromEnv<C extends Command>(cmd: C): C {
  const add = cmd.addOption.bind(cmd);
  cmd.addOption = (opt: Option) => {
    if (opt.long && opt.envVar === undefined && opt.long !== '--help') opt.env(envName(opt.long));
    return add(opt);
  };
  return cmd;
}
