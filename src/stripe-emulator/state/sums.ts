/**
 * Exact running sums kept as unscaled BigInts: the hot path adds many values, so each value is
 * parsed once (from its canonical Decimal form) and formatted only when read.
 */
import * as Decimal from "../../domain/Decimal.js"

export interface Acc {
  int: bigint
  scale: number
}

export const accOf = (canonical: string): Acc => {
  const dot = canonical.indexOf(".")
  return dot < 0
    ? { int: BigInt(canonical), scale: 0 }
    : { int: BigInt(canonical.slice(0, dot) + canonical.slice(dot + 1)), scale: canonical.length - dot - 1 }
}

export const accAdd = (into: Acc, v: Acc): void => {
  if (v.scale > into.scale) {
    into.int = into.int * 10n ** BigInt(v.scale - into.scale) + v.int
    into.scale = v.scale
  } else {
    into.int += v.scale === into.scale ? v.int : v.int * 10n ** BigInt(into.scale - v.scale)
  }
}

export const accString = (a: Acc): string => {
  if (a.scale === 0) return a.int.toString()
  const neg = a.int < 0n
  const digits = (neg ? -a.int : a.int).toString().padStart(a.scale + 1, "0")
  const text = `${neg ? "-" : ""}${digits.slice(0, digits.length - a.scale)}.${digits.slice(digits.length - a.scale)}`
  return Decimal.normalize(text)
}
