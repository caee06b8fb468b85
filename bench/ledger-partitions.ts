/**
 * The ledger on PGlite, plain vs partitioned by month (issue #18 item 5: partition on PGlite too
 * only if it costs nothing measurable). Same columns and indexes as the ledger's hot paths: pages
 * of 2,000 batches inserted (unnest), marked sending then synced by id = ANY, then carry reads.
 * Usage: npx tsx bench/ledger-partitions.ts plain|part [rows]   (run each a few times: noisy)
 */
import { PGlite } from "@electric-sql/pglite"
const N = Number(process.argv[3] ?? 40000)
const cols = `id text NOT NULL, tenant_id text NOT NULL, environment_id text NOT NULL, customer_id text NOT NULL, meter_id text NOT NULL,
 event_type text NOT NULL, window_start timestamptz NOT NULL, window_end timestamptz NOT NULL, sequence int NOT NULL,
 aggregated_quantity numeric(38,12) NOT NULL, sent_quantity numeric(38,12), event_count bigint NOT NULL, identifier text NOT NULL,
 sync_status text NOT NULL, synced_at timestamptz, updated_at timestamptz NOT NULL DEFAULT now()`
const run = async (partitioned: boolean) => {
  const db = new PGlite()
  if (partitioned) {
    await db.exec(`CREATE TABLE b (${cols}, PRIMARY KEY (id, window_start), UNIQUE (tenant_id, environment_id, customer_id, meter_id, event_type, window_start, sequence)) PARTITION BY RANGE (window_start);
    CREATE TABLE b_default PARTITION OF b DEFAULT;`)
    for (let m = 0; m < 4; m++) await db.exec(`CREATE TABLE b_${m} PARTITION OF b FOR VALUES FROM ('2026-${String(9+m).padStart(2,'0')}-01') TO ('${m===3?'2027-01-01':'2026-'+String(10+m).padStart(2,'0')+'-01'}')`)
  } else await db.exec(`CREATE TABLE b (${cols}, PRIMARY KEY (id), UNIQUE (tenant_id, environment_id, customer_id, meter_id, event_type, window_start, sequence))`)
  await db.exec(`CREATE INDEX b_open ON b (tenant_id, environment_id, window_start, id) WHERE sync_status IN ('pending','sending','failed');
   CREATE INDEX b_win ON b (tenant_id, environment_id, window_start);
   CREATE INDEX b_carry ON b (tenant_id, environment_id, customer_id, meter_id) WHERE sent_quantity IS NOT NULL AND sent_quantity <> aggregated_quantity;`)
  const t0 = performance.now()
  const page = 2000
  for (let i = 0; i < N; i += page) {
    const ids: Array<string> = [], cs: Array<string> = [], ws: Array<string> = []
    for (let j = i; j < i + page; j++) { ids.push('b' + j); cs.push('c' + (j % 5000)); ws.push(new Date(Date.UTC(2026, 9 + Math.floor(j / (N/2)) , 1 + (Math.floor(j/5000)%27), 0)).toISOString()) }
    await db.query(`INSERT INTO b (id, tenant_id, environment_id, customer_id, meter_id, event_type, window_start, window_end, sequence, aggregated_quantity, sent_quantity, event_count, identifier, sync_status)
      SELECT r.id, 't', 'e', r.c, 'm', 'ev', r.w, r.w + interval '1 hour', 1, 1.5, 1, 3, r.id, 'pending' FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS r(id, c, w)`, [ids, cs, ws])
    await db.query(`UPDATE b SET sync_status = 'sending', updated_at = now() WHERE tenant_id='t' AND environment_id='e' AND id = ANY($1::text[])`, [ids])
    await db.query(`UPDATE b SET sync_status = 'synced', synced_at = now(), updated_at = now() WHERE tenant_id='t' AND environment_id='e' AND id = ANY($1::text[])`, [ids])
    if (i === N / 2) await db.exec('ANALYZE b')
  }
  const t1 = performance.now()
  for (let k = 0; k < 20; k++) await db.query(`SELECT customer_id, meter_id, SUM(aggregated_quantity - sent_quantity) FROM b WHERE tenant_id='t' AND environment_id='e' AND sent_quantity IS NOT NULL AND sent_quantity <> aggregated_quantity AND meter_id = ANY($1) AND customer_id = ANY($2) GROUP BY 1,2`, [['m'], Array.from({length: 500}, (_, i) => 'c' + (i * 7))])
  const t2 = performance.now()
  console.log(JSON.stringify({ partitioned, rows: N, insert_mark_ms: Math.round(t1 - t0), carry_reads_ms: Math.round(t2 - t1) }))
  await db.close()
}
const which = process.argv[2]
await run(which === 'part')
