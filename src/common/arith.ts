// Integer arithmetic on JS numbers (exact up to 2^53) that every layer uses.

export const TWO_32 = 0x1_0000_0000;

export function alignDown(value: number, align: number): number {
  return value - (value % align);
}

export function alignUp(value: number, align: number): number {
  const r = value % align;
  return r === 0 ? value : value + align - r;
}

/** True when `size` is a power of two (works beyond 2^32, unlike bit tricks). */
export function isPowerOfTwo(size: number): boolean {
  if (!Number.isSafeInteger(size) || size < 1) return false;
  return 2 ** Math.round(Math.log2(size)) === size;
}

export function nextPowerOfTwo(size: number): number {
  if (size <= 1) return 1;
  let p = 2 ** Math.ceil(Math.log2(size));
  if (p < size) p *= 2; // guard against log2 rounding
  while (p / 2 >= size) p /= 2;
  return p;
}
