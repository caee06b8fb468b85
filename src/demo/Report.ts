/** Text rendering of the demo's report (stdout). */
import * as Decimal from "../domain/Decimal.js"
import type { DemoReport } from "./Model.js"

/** Elapsed milliseconds as seconds with one decimal ("12.3"); display only. */
export const formatSeconds = (ms: number): string => {
  const tenths = Math.round(ms / 100)
  return `${Math.floor(tenths / 10)}.${tenths % 10}`
}

const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>, rightAlign: ReadonlySet<number>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((c, i) => (rightAlign.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd()
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n")
}

const yes = (ok: boolean) => (ok ? "yes" : "NO")

export const formatReport = (r: DemoReport, options: { readonly keep: boolean }): string => {
  const out: Array<string> = []
  out.push("")
  out.push(`Reconciliation per meter, window ${r.window.start.slice(0, 16)}Z–${r.window.end.slice(11, 16)}Z (quantities are exact decimals)`)
  out.push("")
  out.push(
    table(
      [
        "meter",
        "events",
        "generated",
        "billable (ours)",
        "to Stripe (ours)",
        "Stripe received",
        "match",
        "synced",
        "retried",
        "late Δ",
        "skipped",
        "skipped qty"
      ],
      r.meters.map((m) => [
        m.meter,
        String(m.events),
        m.expectedAll,
        m.ledgerTotal,
        m.ledgerSynced,
        m.stripeReceived,
        yes(
          Decimal.equals(m.ledgerTotal, m.expectedAll) &&
            Decimal.equals(m.ledgerSynced, m.expectedMapped) &&
            Decimal.equals(m.stripeReceived, m.expectedMapped)
        ),
        String(m.batchesSynced),
        String(m.batchesRetried),
        String(m.lateDeltas),
        String(m.batchesSkipped),
        m.skippedQuantity
      ]),
      new Set([1, 2, 3, 4, 5, 7, 8, 9, 10, 11])
    )
  )
  out.push("")
  out.push(
    "  generated = what the demo sent (all customers); billable = our ledger (every batch); to Stripe = synced batches;"
  )
  out.push(
    `  skipped = usage of the ${r.customers.withoutStripe} customers without a Stripe customer, held as skipped/no_mapping until one is mapped.`
  )
  out.push(
    "  retried = batches a run left pending (Stripe still failing after the client's retries) that a later run sent; late Δ = delta batches (sequence > 1)."
  )
  out.push(
    `  Per (customer, meter): ${r.pairs.checked - r.pairs.mismatched}/${r.pairs.checked} Stripe totals equal the generated totals.`
  )
  out.push("")
  const calls = Object.entries(r.stripe.callsByPhase)
    .map(([p, n]) => `${p} ${n}`)
    .join(", ")
  out.push(`Stripe calls used: ${Object.values(r.stripe.callsByPhase).reduce((a, b) => a + b, 0)} (${calls})`)
  out.push(
    `  by endpoint: ${Object.entries(r.stripe.callsByEndpoint)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([e, n]) => `${e} ${n}`)
      .join("; ")}`
  )
  out.push(
    `  faults answered by the emulator: ${r.stripe.faultResponses.rateLimited}×429, ${r.stripe.faultResponses.serverErrors}×5xx${
      r.stripe.faultResponses.dropped ? `, ${r.stripe.faultResponses.dropped} dropped` : ""
    }; retries by the Stripe client: ${r.stripe.clientRetries ?? "n/a (no /metrics)"}; meter events accepted: ${r.stripe.meterEventsAccepted}`
  )
  out.push(
    `Sync runs: ${r.runs
      .map((x) => `${x.trigger} ${x.status} (created ${x.batchesCreated}, synced ${x.batchesSynced}, skipped ${x.batchesSkipped}, failed ${x.batchesFailed}${x.stripeRequests !== null ? `, ${x.stripeRequests} Stripe requests` : ""})`)
      .join(" → ")}`
  )
  out.push(
    `Reconciliation endpoint: ${r.reconciliation.pairs} pairs, ${r.reconciliation.rows} hourly rows, synced ${r.reconciliation.syncedTotal}, Stripe ${r.reconciliation.stripeTotal}, drift ${r.reconciliation.driftTotal} (${r.reconciliation.rowsWithDrift} rows with drift, ${r.reconciliation.unavailablePairs} unavailable)`
  )
  const s = r.status as {
    counts?: Record<string, number>
    skipped_by_reason?: Record<string, number>
    success_rate_24h?: number | null
    circuit_state?: string
    oldest_unsynced_window?: string | null
    lag_seconds?: { p50: number | null; p95: number | null }
  }
  out.push(
    `Sync status: ${Object.entries(s.counts ?? {})
      .map(([k, v]) => `${k} ${v}`)
      .join(", ")}; skipped by reason ${JSON.stringify(s.skipped_by_reason ?? {})}; success rate 24h ${s.success_rate_24h ?? "n/a"}; circuit ${s.circuit_state}; oldest unsynced window ${s.oldest_unsynced_window ?? "none"}`
  )
  out.push(
    `Webhooks: ${r.webhooks.deliveries} deliveries, ${r.webhooks.non2xx} not 2xx; log ${Object.entries(r.webhooks.byStatus)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ")}; ${r.webhooks.duplicateDeliveries} duplicate deliveries, ${r.webhooks.duplicateRecordedOnce ? "each logged once" : "NOT logged once"}${r.webhooks.duplicatesAnswered === null ? "" : ` (answered "duplicate": ${r.webhooks.duplicatesAnswered})`}; updated-before-created ended with ${r.webhooks.reorderedFinalEmail}`
  )
  out.push("")
  out.push(`Phases: ${r.phases.map((p) => `${p.phase} ${formatSeconds(p.ms)}s`).join(", ")}`)
  if (r.dataDir !== null && options.keep) out.push(`Data directory kept: ${r.dataDir}`)
  out.push(`Total wall time: ${formatSeconds(r.wallMs)} s`)
  out.push("")
  if (r.ok) out.push("OK: every total matches exactly (generator = our ledger = Stripe), reconciliation drift 0.")
  else {
    out.push("FAILED:")
    for (const f of r.failures) out.push(`  - ${f}`)
  }
  return out.join("\n")
}
