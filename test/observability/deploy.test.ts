/**
 * The deployment files agree with the code: every metric an alert or dashboard query names is one
 * the service exports (as rendered by the Prometheus exporter), and the compose stack is wired
 * service → collector → Jaeger, Prometheus → service, Grafana → provisioned files.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { parse } from "yaml"
import * as Metrics from "../../src/observability/Metrics.js"
import { Telemetry, TelemetryTest } from "../../src/observability/Telemetry.js"
import * as StripeMetrics from "../../src/stripe/StripeMetrics.js"

const root = fileURLToPath(new URL("../..", import.meta.url))
const read = (p: string) => fs.readFileSync(path.join(root, p), "utf8")

// The parts of each deployment file the checks read, decoded: a file of another shape fails here, by name.
const Strings = Schema.Array(Schema.String)
const Labels = Schema.Record({ key: Schema.String, value: Schema.String })
const Compose = Schema.Struct({
  services: Schema.Record({
    key: Schema.String,
    value: Schema.Struct({
      image: Schema.optional(Schema.String),
      build: Schema.optional(Schema.Struct({ dockerfile: Schema.String })),
      environment: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Union(Schema.String, Schema.Number, Schema.Boolean) })),
      volumes: Schema.optional(Strings),
      command: Schema.optional(Strings)
    })
  })
})
const Collector = Schema.Struct({
  receivers: Schema.Struct({ otlp: Schema.Struct({ protocols: Schema.Struct({ grpc: Schema.Unknown, http: Schema.Unknown }) }) }),
  exporters: Schema.Record({ key: Schema.String, value: Schema.Struct({ endpoint: Schema.optional(Schema.String) }) }),
  service: Schema.Struct({ pipelines: Schema.Record({ key: Schema.String, value: Schema.Struct({ receivers: Strings, exporters: Strings }) }) })
})
const Rule = Schema.Struct({
  alert: Schema.optional(Schema.String),
  record: Schema.optional(Schema.String),
  expr: Schema.Union(Schema.String, Schema.Number),
  annotations: Schema.optional(Labels),
  labels: Schema.optional(Labels)
})
const Alerts = Schema.Struct({ groups: Schema.Array(Schema.Struct({ rules: Schema.Array(Rule) })) })
const PromConfig = Schema.Struct({
  scrape_configs: Schema.Array(Schema.Struct({ metrics_path: Schema.optional(Schema.String), static_configs: Schema.Array(Schema.Struct({ targets: Strings })) })),
  rule_files: Strings
})
interface Panel {
  readonly targets?: ReadonlyArray<{ readonly expr?: unknown }>
  readonly datasource?: { readonly uid?: string | undefined } | null
  readonly panels?: ReadonlyArray<Panel>
}
const Panel: Schema.Schema<Panel> = Schema.Struct({
  targets: Schema.optional(Schema.Array(Schema.Struct({ expr: Schema.optional(Schema.Unknown) }))),
  datasource: Schema.optional(Schema.NullOr(Schema.Struct({ uid: Schema.optional(Schema.String) }))),
  panels: Schema.optional(Schema.Array(Schema.suspend(() => Panel)))
})
const Dashboard = Schema.Struct({ panels: Schema.Array(Panel) })
const Datasources = Schema.Struct({ datasources: Schema.Array(Schema.Struct({ type: Schema.String, url: Schema.optional(Schema.String), uid: Schema.optional(Schema.String) })) })
const Providers = Schema.Struct({ providers: Schema.Array(Schema.Struct({ options: Schema.Struct({ path: Schema.String }) })) })

const yamlFile = <A, I>(schema: Schema.Schema<A, I>, p: string): A => Schema.decodeUnknownSync(schema)(parse(read(p)))

const compose = yamlFile(Compose, "docker-compose.yml")
const collector = yamlFile(Collector, "otel-collector.yaml")
const alerts = yamlFile(Alerts, "deploy/prometheus/alerts.yml")
const promConfig = yamlFile(PromConfig, "deploy/prometheus/prometheus.yml")
const dashboard = Schema.decodeUnknownSync(Dashboard)(JSON.parse(read("deploy/grafana/flexprice-stripe.json")))
const operating = read("README.md")

const PROMQL_WORDS = new Set([
  "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf", "nan"
])

/** Metric (and recording-rule) names referenced by a PromQL expression. */
const metricNames = (expr: string): ReadonlyArray<string> => {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ")
  const out = new Set<string>()
  for (const m of stripped.matchAll(/(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const name = m[0]
    const after = stripped.slice(m.index! + name.length).trimStart()
    if (after.startsWith("(")) continue // function or aggregation
    if (PROMQL_WORDS.has(name.toLowerCase())) continue
    // `$value`-free expressions only contain durations inside [] (stripped) and numbers.
    if (/^\d/.test(name)) continue
    out.add(name)
  }
  return [...out]
}

/** Series names as the Prometheus exporter renders them, for every metric the code defines. */
const exportedNames = Effect.gen(function*() {
  Metrics.registerAll()
  Metrics.registerAll(StripeMetrics as unknown as Record<string, unknown>)
  const text = yield* (yield* TelemetryTest).prometheusText
  const names = new Set<string>()
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, kind] = m as unknown as [string, string, string]
    if (kind === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(`${name}${s}`)
    else names.add(name)
  }
  return names
}).pipe(Effect.provide(Telemetry.layerTest))

const alertRules = alerts.groups.flatMap((g) => g.rules)
const recorded = new Set(alertRules.filter((r) => r.record).map((r) => r.record as string))

const dashboardExprs = (): Array<string> => {
  const out: Array<string> = []
  const walk = (panels: ReadonlyArray<Panel>) => {
    for (const p of panels) {
      for (const t of p.targets ?? []) if (typeof t.expr === "string") out.push(t.expr)
      if (Array.isArray(p.panels)) walk(p.panels)
    }
  }
  walk(dashboard.panels)
  return out
}

describe("metric names in alerts and dashboard", () => {
  it("the PromQL name extractor finds metrics, not functions, labels or keywords", () => {
    expect(
      metricNames(
        'sum by (status) (increase(foo_total{status="a b"}[1h])) / on() group_left() bar > scalar(x:y) and baz offset 5m'
      )
    ).toEqual(["foo_total", "bar", "x:y", "baz"])
  })

  it.live("every metric referenced is exported by the code (after Prometheus naming)", () =>
    Effect.gen(function*() {
      const exported = yield* exportedNames
      // sanity: the exporter saw both our metrics and the Stripe client's
      expect(exported.has("flexprice_sync_batches_total")).toBe(true)
      expect(exported.has("flexprice_stripe_calls_total")).toBe(true)
      expect(exported.has("flexprice_sync_lag_seconds_bucket")).toBe(true)
      expect(exported.has("flexprice_sync_lag_seconds")).toBe(false)

      const exprs = [
        ...alertRules.map((r) => ({ where: r.alert ?? r.record, expr: String(r.expr) })),
        ...dashboardExprs().map((expr) => ({ where: "dashboard", expr }))
      ]
      expect(exprs.length).toBeGreaterThan(20)
      expect(new Set(exprs.flatMap((e) => metricNames(e.expr))).size).toBeGreaterThan(20)
      const unknown = exprs.flatMap(({ where, expr }) =>
        metricNames(expr)
          .filter((n) => !exported.has(n) && !recorded.has(n))
          .map((n) => `${where}: ${n}`)
      )
      expect(unknown).toEqual([])
    }))

  it("the dashboard shows every sync, webhook, ingestion and Stripe metric family", () => {
    const used = new Set(dashboardExprs().flatMap(metricNames).map((n) => n.replace(/_(bucket|sum|count)$/, "")))
    for (const family of [
      "flexprice_sync_batches_total",
      "flexprice_sync_lag_seconds",
      "flexprice_sync_oldest_unsynced_window_age_seconds",
      "flexprice_webhooks_total",
      "flexprice_events_accepted_total",
      "flexprice_aggregation_query_duration_seconds",
      "flexprice_stripe_calls_total",
      "flexprice_stripe_call_duration_seconds",
      "flexprice_stripe_retries_total",
      "flexprice_stripe_circuit_state"
    ]) expect(used, family).toContain(family)
  })

  it("the dashboard shows every metric an alert rule watches", () => {
    const used = new Set(dashboardExprs().flatMap(metricNames).map((n) => n.replace(/_(bucket|sum|count)$/, "")))
    for (const rule of alertRules.filter((r) => r.alert && r.expr)) {
      for (const name of metricNames(String(rule.expr))) {
        const family = name.replace(/_(bucket|sum|count)$/, "")
        if (family.startsWith("flexprice_")) expect(used, `${rule.alert as string}: ${family}`).toContain(family)
      }
    }
  })
})

describe("alert rules", () => {
  const byName = new Map(alertRules.flatMap((r) => (r.alert !== undefined ? [[r.alert, r] as const] : [])))

  it("has the requirements' alerts plus the 65-minute lag alert", () => {
    for (const name of [
      "SyncSuccessRateLow",
      "StripeAuthenticationFailures",
      "EventVolumeAboveCapacity",
      "WebhookProcessingFailures",
      "OldestUnsyncedWindowTooOld"
    ]) expect([...byName.keys()]).toContain(name)
    expect(String(byName.get("SyncSuccessRateLow")?.expr)).toContain("0.95")
    expect(String(byName.get("SyncSuccessRateLow")?.expr)).toContain("[1h]")
    expect(String(byName.get("OldestUnsyncedWindowTooOld")?.expr)).toMatch(/> 3900\b/)
    expect(String(byName.get("EventVolumeAboveCapacity")?.expr)).toContain("flexprice:events_capacity_per_second")
    expect(recorded).toContain("flexprice:events_capacity_per_second")
  })

  it("every alert has summary, description and a runbook that exists in the operating guide", () => {
    const anchors = new Set([...operating.matchAll(/^#{2,4} (.+)$/gm)].map((m) => m[1]!.trim().toLowerCase().replace(/[^a-z0-9 -]/g, "").replace(/ /g, "-")))
    for (const [name, rule] of byName) {
      expect(rule.annotations?.summary, name).toBeTruthy()
      expect(rule.annotations?.description, name).toBeTruthy()
      const runbook = String(rule.annotations?.runbook ?? "")
      expect(runbook, name).toMatch(/^README\.md#/)
      expect(anchors, `${name} runbook anchor`).toContain(runbook.split("#")[1])
      expect(rule.labels?.severity, name).toMatch(/^(critical|warning)$/)
    }
  })
})

describe("docker-compose stack", () => {
  const services = compose.services
  const service = (name: string) => {
    const s = services[name]
    if (s === undefined) throw new Error(`docker-compose.yml has no service ${name}`)
    return s
  }
  const env = (svc: string) => service(svc).environment ?? {}

  it("has every service, with pinned images", () => {
    for (const s of ["flexprice", "postgres", "clickhouse", "otel-collector", "jaeger", "prometheus", "grafana"]) {
      expect(Object.keys(services)).toContain(s)
    }
    expect(service("postgres").image).toMatch(/^postgres:16(\.\d+)?$/)
    expect(service("clickhouse").image).toMatch(/^clickhouse\/clickhouse-server:26\.7\.2$/)
    expect(service("otel-collector").image).toMatch(/^otel\/opentelemetry-collector-contrib:\d/)
    expect(service("jaeger").image).toMatch(/^jaegertracing\/all-in-one:\d/)
    expect(service("prometheus").image).toMatch(/^prom\/prometheus:v\d/)
    expect(service("grafana").image).toMatch(/^grafana\/grafana:\d/)
    for (const [name, s] of Object.entries(services)) {
      if (s.image) expect(s.image, name).not.toMatch(/:latest$|^[^:]+$/)
    }
  })

  it("builds the service from the Dockerfile and points it at the stack", () => {
    expect(service("flexprice").build?.dockerfile).toBe("Dockerfile")
    const e = env("flexprice")
    expect(e["FLEXPRICE_DATABASE_URL"]).toBe("postgres://postgres:postgres@postgres:5432/flexprice")
    expect(e["FLEXPRICE_CLICKHOUSE_URL"]).toBe("http://clickhouse:8123")
    expect(e["OTEL_EXPORTER_OTLP_ENDPOINT"]).toBe("http://otel-collector:4318")
    expect(e["FLEXPRICE_HTTP_ADDR"]).toBe("0.0.0.0:8080")
    // PostgreSQL mode refuses to start without keys; compose must demand them, not embed one.
    expect(e["FLEXPRICE_ENCRYPTION_KEYS"]).toMatch(/^\$\{FLEXPRICE_ENCRYPTION_KEYS:\?/)
    expect(env("jaeger")["COLLECTOR_OTLP_ENABLED"]).toBe("true")
    const dockerfile = read("Dockerfile")
    expect(dockerfile).toMatch(/FROM \$\{NODE_IMAGE\} AS build/)
    expect(dockerfile).toMatch(/ARG NODE_IMAGE=node:24\.\d+\.\d+-slim/)
    expect(dockerfile).toContain("npm ci")
    expect(dockerfile).toContain("npm run build")
    expect(dockerfile).toContain('CMD ["node", "dist/bin/flexprice.js", "serve"]')
    expect(dockerfile).toContain("FLEXPRICE_HTTP_ADDR=0.0.0.0:8080")
  })

  it("mounts only files that exist", () => {
    for (const [name, s] of Object.entries(services)) {
      for (const v of s.volumes ?? []) {
        const host = v.split(":")[0]!
        if (host.startsWith(".")) expect(fs.existsSync(path.join(root, host)), `${name}: ${host}`).toBe(true)
      }
    }
  })

  it("collector: OTLP grpc+http in, traces to Jaeger over OTLP, metrics to a Prometheus exporter on 8889", () => {
    expect(collector.receivers.otlp.protocols.grpc).toBeTruthy()
    expect(collector.receivers.otlp.protocols.http).toBeTruthy()
    const traces = collector.service.pipelines["traces"]!
    expect(traces.receivers).toContain("otlp")
    const jaegerExporter = traces.exporters.find((e) => e.startsWith("otlp"))!
    expect(collector.exporters[jaegerExporter]?.endpoint).toBe("jaeger:4317")
    const metrics = collector.service.pipelines["metrics"]!
    expect(metrics.exporters).toContain("prometheus")
    expect(collector.exporters["prometheus"]?.endpoint).toMatch(/:8889$/)
    const mount = (service("otel-collector").volumes ?? []).find((v) => v.startsWith("./otel-collector.yaml"))!
    expect((service("otel-collector").command ?? []).join(" ")).toContain(mount.split(":")[1])
  })

  it("prometheus scrapes the service and the collector and loads the alert rules", () => {
    const targets = promConfig.scrape_configs.flatMap((j) =>
      j.static_configs.flatMap((c) => c.targets).map((t) => ({ t, path: j.metrics_path ?? "/metrics" }))
    )
    expect(targets).toContainEqual({ t: "flexprice:8080", path: "/metrics" })
    expect(targets.map((x) => x.t)).toContain("otel-collector:8889")
    const mounts = service("prometheus").volumes ?? []
    for (const rule of promConfig.rule_files) {
      const m = mounts.find((v) => v.split(":")[1] === rule)
      expect(m, rule).toBeDefined()
      expect(m!.split(":")[0]).toBe("./deploy/prometheus/alerts.yml")
    }
    const configMount = mounts.find((v) => v.startsWith("./deploy/prometheus/prometheus.yml:"))!
    expect((service("prometheus").command ?? []).join(" ")).toContain(`--config.file=${configMount.split(":")[1]}`)
  })

  it("grafana provisions Prometheus and Jaeger data sources and the dashboard", () => {
    const mounts = service("grafana").volumes ?? []
    const hostFor = (container: string) => mounts.find((v) => v.split(":")[1] === container)?.split(":")[0]
    const dsDir = hostFor("/etc/grafana/provisioning/datasources")!
    const dbDir = hostFor("/etc/grafana/provisioning/dashboards")!
    const ds = fs.readdirSync(path.join(root, dsDir)).flatMap((f) => yamlFile(Datasources, path.join(dsDir, f)).datasources)
    expect(ds.find((d) => d.type === "prometheus")?.url).toBe("http://prometheus:9090")
    expect(ds.find((d) => d.type === "jaeger")?.url).toBe("http://jaeger:16686")
    const providers = fs.readdirSync(path.join(root, dbDir)).flatMap((f) => yamlFile(Providers, path.join(dbDir, f)).providers)
    const dashPath = providers[0]!.options.path
    expect(hostFor(`${dashPath}/flexprice-stripe.json`)).toBe("./deploy/grafana/flexprice-stripe.json")
    // every panel's data source is one that is provisioned
    const uids = new Set(ds.map((d) => d.uid))
    for (const p of dashboard.panels) if (p.datasource) expect(uids).toContain(p.datasource.uid)
  })
})
