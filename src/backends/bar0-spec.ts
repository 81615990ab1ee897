/** Which BAR0 backend to open: the register source, or a host function passed through. */
export type Bar0Spec =
  | { kind: 'emulated' }
  | { kind: 'file'; path: string }
  /** A host function with no driver, through its sysfs resource0: registers only. */
  | { kind: 'sysfs'; bdf: string }
  /** A host function bound to vfio-pci, passed through: a PCI address or a VFIO cdev path. */
  | { kind: 'vfio'; target: string };
