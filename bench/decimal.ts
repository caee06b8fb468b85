/**
 * Decimal micro-benchmark (not a test): the string operations the sync performs per aggregate
 * (row read `normalize`, carry `add`/`sub`/`isZero`, page `sum`, `compare`), each timed over
 * the same generated quantities, seven rounds, median ns per operation.
 *
 *   npx tsx bench/decimal.ts                    # 200,000 quantities
 *   npx tsx bench/decimal.ts --n 50000
 *   git show 5cba392:src/domain/Decimal.ts > bench/Decimal.baseline.ts   # (git-ignored)
 *   npx tsx bench/decimal.ts --baseline ./Decimal.baseline.ts
 *
 * With `--baseline` both implementations run in this process, alternating round by round, so
 * a load change on a shared machine hits both alike; the ratio column is current / baseline.
 */
import * as Current from "../src/domain/Decimal.js"
import { prng } from "../src/domain/Prng.js"

type Impl = Pick<typeof Current, "normalize" | "add" | "sub" | "isZero" | "compare" | "sum">

const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1] : undefined
}
const N = Number(arg("n") ?? 200_000)
const baselinePath = arg("baseline")
const ROUNDS = 7

const rand = prng(4242)
const digits = (n: number) => Array.from({ length: n }, () => Math.floor(rand() * 10)).join("")
// quantities as the ledger holds them: up to 12 decimals, some negative, some whole, some zero
const values = Array.from({ length: N }, (_, i) => {
  if (i % 50 === 0) return "0"
  const whole = String(Math.floor(rand() * 100_000))
  const text = i % 5 === 0 ? whole : `${whole}.${digits(1 + Math.floor(rand() * 12))}`
  return i % 7 === 0 ? `-${text}` : text
})
// every third one spelled with trailing fractional zeros, as a numeric(38,12) column returns it
const spelled = values.map((v, i) => (i % 3 !== 0 ? v : v.includes(".") ? `${v}000` : `${v}.000`))

const ops: ReadonlyArray<{ readonly name: string; readonly count: number; readonly run: (d: Impl) => number }> = [
  { name: "normalize", count: N, run: (d) => spelled.reduce((n, v) => n + d.normalize(v).length, 0) },
  {
    name: "add (pairwise)",
    count: N - 1,
    run: (d) => {
      let n = 0
      for (let i = 1; i < N; i++) n += d.add(values[i - 1]!, values[i]!).length
      return n
    }
  },
  {
    name: "sub (pairwise)",
    count: N - 1,
    run: (d) => {
      let n = 0
      for (let i = 1; i < N; i++) n += d.sub(values[i - 1]!, values[i]!).length
      return n
    }
  },
  { name: "isZero", count: N, run: (d) => values.reduce((n, v) => n + (d.isZero(v) ? 1 : 0), 0) },
  {
    name: "compare (pairwise)",
    count: N - 1,
    run: (d) => {
      let n = 0
      for (let i = 1; i < N; i++) n += d.compare(values[i - 1]!, values[i]!)
      return n
    }
  },
  {
    name: "sum of pages of 2,000 (per value)",
    count: N,
    run: (d) => {
      let n = 0
      for (let i = 0; i < N; i += 2000) n += d.sum(values.slice(i, i + 2000)).length
      return n
    }
  },
  {
    name: "carry step: add, isZero, sub",
    count: N - 1,
    run: (d) => {
      let outstanding = "0"
      for (let i = 1; i < N; i++) {
        const total = d.add(outstanding, values[i]!)
        if (!d.isZero(total)) outstanding = d.sub(total, values[i - 1]!)
      }
      return outstanding.length
    }
  }
]

const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!

const main = async () => {
  const impls: Array<{ readonly name: string; readonly d: Impl }> = [{ name: "current", d: Current }]
  if (baselinePath !== undefined) impls.push({ name: "baseline", d: (await import(baselinePath)) as Impl })
  console.log(`Decimal micro-benchmark: ${N} quantities, ${ROUNDS} rounds, median ns/op; node ${process.version}`)
  console.log(["operation".padEnd(34), ...impls.map((i) => i.name.padStart(10)), impls.length > 1 ? "  ratio" : ""].join(""))
  let sink = 0
  for (const op of ops) {
    for (const i of impls) sink += op.run(i.d) // warm-up
    const ns = impls.map(() => [] as Array<number>)
    for (let r = 0; r < ROUNDS; r++)
      impls.forEach((i, k) => {
        const t = process.hrtime.bigint()
        sink += op.run(i.d)
        ns[k]!.push(Number(process.hrtime.bigint() - t) / op.count)
      })
    const m = ns.map(median)
    const ratio = m.length > 1 ? `  ${(m[0]! / m[1]!).toFixed(2)}` : ""
    console.log([op.name.padEnd(34), ...m.map((x) => x.toFixed(0).padStart(10)), ratio].join(""))
  }
  if (sink === 0.5) console.log("")
}

void main()
