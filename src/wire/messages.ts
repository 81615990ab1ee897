// Decoded forms of the vfio-user payloads. Field names follow the spec; 64-bit
// fields are JS numbers, and the parser refuses values above 2^53.

export interface Header {
  id: number;
  command: number;
  /** Whole message size, header included. */
  size: number;
  flags: number;
  error: number;
}

/** Capabilities of the VERSION JSON, as a peer states them. */
export interface Capabilities {
  maxMsgFds?: number;
  maxDataXferSize?: number;
  pgsizes?: number;
  maxDmaMaps?: number;
  writeMultiple?: boolean;
  /** Capability names present, recognised or not. */
  names: string[];
}

export interface Version {
  major: number;
  minor: number;
  /** null when the message carries no JSON. */
  capabilities: Capabilities | null;
}

export interface DmaMap {
  argsz: number;
  flags: number;
  offset: number;
  address: number;
  size: number;
}

export interface DmaUnmap {
  argsz: number;
  flags: number;
  address: number;
  size: number;
}

export interface DeviceInfo {
  argsz: number;
  flags: number;
  numRegions: number;
  numIrqs: number;
}

export interface SparseArea {
  offset: number;
  size: number;
}

export interface RegionInfo {
  argsz: number;
  flags: number;
  index: number;
  capOffset: number;
  size: number;
  offset: number;
  /** From the sparse-mmap capability, when present. */
  sparseAreas: SparseArea[] | null;
}

export interface IndexQuery {
  argsz: number;
  flags: number;
  index: number;
}

export interface IrqInfo {
  argsz: number;
  flags: number;
  index: number;
  count: number;
}

export interface IrqSet {
  argsz: number;
  flags: number;
  index: number;
  start: number;
  count: number;
  /** The DATA_BOOL array; empty for other data types. */
  bools: Uint8Array;
}

/** REGION_READ / REGION_WRITE and one entry of REGION_WRITE_MULTI. */
export interface RegionAccess {
  offset: number;
  region: number;
  count: number;
  /** Where the write data starts in the buffer it was parsed from (-1: none). */
  dataOffset: number;
}

