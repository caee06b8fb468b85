/**
 * The one secret scrubber (src/observability/Scrub.ts): whatever text surrounds a secret, the
 * secret never survives, and text without secrets passes through unchanged.
 */
import { describe, expect, it } from "vitest"
import fc from "fast-check"
import { FILTERED, scrub, scrubString } from "../../src/observability/Scrub.js"

const alnum = fc.stringMatching(/^[A-Za-z0-9]{8,40}$/)
/** Text that cannot itself form a secret: no underscores, colons, slashes or `@`. */
const plain = fc.stringMatching(/^[a-z .,;!?-]{0,40}$/)

const secrets: ReadonlyArray<[string, fc.Arbitrary<string>]> = [
  ["Stripe secret key", fc.tuple(fc.constantFrom("live", "test"), alnum).map(([m, t]) => ["sk", m, t].join("_"))],
  ["Stripe restricted key", fc.tuple(fc.constantFrom("live", "test"), alnum).map(([m, t]) => ["rk", m, t].join("_"))],
  ["Stripe publishable key", fc.tuple(fc.constantFrom("live", "test"), alnum).map(([m, t]) => ["pk", m, t].join("_"))],
  ["Stripe ephemeral key", fc.tuple(fc.constantFrom("live", "test"), alnum).map(([m, t]) => ["ek", m, t].join("_"))],
  ["webhook secret", alnum.map((t) => `whsec_${t}`)],
  ["bearer token", alnum.map((t) => `Bearer ${t}`)]
]

describe("scrubString", () => {
  for (const [name, secret] of secrets) {
    it(`removes a ${name} wherever it appears`, () => {
      fc.assert(
        fc.property(plain, secret, plain, (before, s, after) => {
          const out = scrubString(`${before} ${s} ${after}`)
          expect(out).not.toContain(s)
          expect(out).toContain(FILTERED)
          expect(out.startsWith(before)).toBe(true)
        })
      )
    })
  }

  it("removes the password of a URL or DSN and keeps the rest of it", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("postgres", "postgresql", "http", "https", "clickhouse"),
        fc.stringMatching(/^[a-z][a-z0-9]{0,10}$/),
        fc.stringMatching(/^[A-Za-z0-9!$%^&*()+=-]{6,30}$/),
        (scheme, user, password) => {
          const out = scrubString(`connect to ${scheme}://${user}:${password}@db.internal:5432/app failed`)
          // The whole answer, not "the password appears nowhere": a password may also be a piece
          // of the text around it (user "atotype", password "totype"), which is not a secret.
          expect(out).toBe(`connect to ${scheme}://${user}:${FILTERED}@db.internal:5432/app failed`)
        }
      )
    )
  })

  it("removes the caller's own literal secrets of 6 characters or more, with the marker asked for", () => {
    fc.assert(
      fc.property(plain, fc.stringMatching(/^[A-Za-z0-9]{6,30}$/), (text, literal) => {
        const out = scrubString(`${text}${literal}${text}`, { literals: [literal], marker: "[redacted]" })
        expect(out).toBe(`${text}[redacted]${text}`)
      })
    )
  })

  it("leaves text without secrets unchanged", () => {
    fc.assert(
      fc.property(plain, (text) => {
        expect(scrubString(text)).toBe(text)
      })
    )
  })
})

describe("scrub (structured values)", () => {
  it("filters secret-named fields and secret-looking values at any depth", () => {
    const key = ["sk", "test", "abcdEFGH1234"].join("_")
    expect(
      scrub({ api_key: "anything", nested: { note: `uses ${key}`, count: 3, webhook_secret: "x" }, list: [key] })
    ).toEqual({ api_key: FILTERED, nested: { note: `uses ${FILTERED}`, count: 3, webhook_secret: FILTERED }, list: [FILTERED] })
  })
})
