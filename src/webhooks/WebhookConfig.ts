/**
 * Webhook settings from the environment:
 * - STRIPE_WEBHOOK_SECRET: secret of the global endpoint `POST /webhooks/stripe` (optional);
 * - STRIPE_WEBHOOK_ALLOWED_IPS: comma-separated CIDRs (or single addresses); empty = no allowlist.
 *   Stripe publishes its webhook source addresses at https://docs.stripe.com/ips;
 * - FLEXPRICE_TRUSTED_PROXIES: CIDRs of reverse proxies whose X-Forwarded-For is believed;
 * - STRIPE_WEBHOOK_MAX_BODY_BYTES (524288) and STRIPE_WEBHOOK_TOLERANCE_SECONDS (300).
 */
import { Config, ConfigError, Either, Option, Redacted } from "effect"
import { BlockList, isIP } from "node:net"
import { integerSetting } from "../config/Settings.js"

export interface CidrList {
  readonly entries: ReadonlyArray<string>
  readonly contains: (ip: string) => boolean
}

/** `::ffff:1.2.3.4` → `1.2.3.4`, so IPv4 CIDRs match IPv4 clients on dual-stack sockets. */
export const normalizeIp = (ip: string): string => {
  const t = ip.trim().replace(/^\[|\]$/g, "")
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(t)
  return m ? m[1]! : t
}

export const parseCidrs = (raw: string): Either.Either<CidrList, string> => {
  const list = new BlockList()
  const entries = raw
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")
  for (const e of entries) {
    const [addr, bits, ...rest] = e.split("/")
    const a = normalizeIp(addr ?? "")
    const family = isIP(a)
    if (family === 0 || rest.length > 0) return Either.left(`"${e}" is not an IP address or CIDR`)
    const max = family === 4 ? 32 : 128
    const prefix = bits === undefined ? max : Number(bits)
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (bits !== undefined && !/^\d+$/.test(bits)))
      return Either.left(`"${e}" has an invalid prefix length`)
    list.addSubnet(a, prefix, family === 4 ? "ipv4" : "ipv6")
  }
  return Either.right({
    entries,
    contains: (ip) => {
      const a = normalizeIp(ip)
      const family = isIP(a)
      return family !== 0 && list.check(a, family === 4 ? "ipv4" : "ipv6")
    }
  })
}

const cidrs = (name: string) =>
  Config.string(name).pipe(
    Config.withDefault(""),
    Config.mapOrFail((s) => Either.mapLeft(parseCidrs(s), (why) => ConfigError.InvalidData([name], `expected comma-separated CIDRs: ${why}`)))
  )

export interface WebhookSettings {
  readonly globalSecret: Option.Option<Redacted.Redacted<string>>
  /** None = every source address is allowed. */
  readonly allowedIps: Option.Option<CidrList>
  readonly trustedProxies: CidrList
  readonly maxBodyBytes: number
  readonly toleranceSeconds: number
}

export const WebhookConfig: Config.Config<WebhookSettings> = Config.all({
  globalSecret: Config.option(Config.redacted("STRIPE_WEBHOOK_SECRET")).pipe(
    Config.map(Option.filter((s) => Redacted.value(s).trim() !== ""))
  ),
  allowedIps: cidrs("STRIPE_WEBHOOK_ALLOWED_IPS").pipe(Config.map((l) => (l.entries.length === 0 ? Option.none() : Option.some(l)))),
  trustedProxies: cidrs("FLEXPRICE_TRUSTED_PROXIES"),
  maxBodyBytes: integerSetting("STRIPE_WEBHOOK_MAX_BODY_BYTES", { default: 512 * 1024, min: 1 }),
  toleranceSeconds: integerSetting("STRIPE_WEBHOOK_TOLERANCE_SECONDS", { default: 300, min: 1 })
})

/**
 * The client address: the socket peer, unless the peer is a trusted proxy, in which case
 * X-Forwarded-For is walked from the right past trusted proxies to the first untrusted hop.
 */
export const clientIp = (remote: string | undefined, forwardedFor: string | undefined, trusted: CidrList): string | undefined => {
  if (remote === undefined) return undefined
  let ip = normalizeIp(remote)
  if (!trusted.contains(ip) || forwardedFor === undefined) return ip
  const hops = forwardedFor
    .split(",")
    .map((s) => normalizeIp(s))
    .filter((s) => s !== "")
  for (let i = hops.length - 1; i >= 0; i--) {
    ip = hops[i]!
    if (!trusted.contains(ip)) return ip
  }
  return ip
}
