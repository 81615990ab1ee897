/** QEMU arguments that attach a vfio-user-pci device to a daemon's socket. */
export function vfioUserDevice(socket: string, id = 'gpu0'): string[] {
  return ['-device', JSON.stringify({ driver: 'vfio-user-pci', id, socket: { type: 'unix', path: socket } })];
}
