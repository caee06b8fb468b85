import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, Exit, Layer, Logger, Option, Redacted } from "effect"
import fc from "fast-check"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Telemetry, TelemetryTest } from "../../src/observability/Telemetry.js"
import { DecryptionFailed, Encryption, EncryptionConfigError, KEY_FILE_NAME } from "../../src/security/Encryption.js"

const key = () => randomBytes(32)
const k1 = key()
const k2 = key()
const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64")

const withKeys = <A, E>(keys: Parameters<typeof Encryption.layerFromKeys>[0], f: (e: Encryption["Type"]) => Effect.Effect<A, E>) =>
  Effect.flatMap(Encryption, f).pipe(Effect.provide(Encryption.layerFromKeys(keys)))

const fromEnv = (env: Record<string, string>) =>
  Effect.flatMap(Encryption, Effect.succeed).pipe(
    Effect.provide(Encryption.layerFromEnv),
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))
  )

/** Runs the effect capturing every log line it writes. */
const captureLogs = <A, E>(self: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const lines: Array<string> = []
    const logger = Logger.make(({ message }) => lines.push(Array.isArray(message) ? message.join(" ") : String(message)))
    const exit = yield* Effect.exit(self.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger))))
    return { exit, lines }
  })

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "flexprice-enc-"))

describe("Encryption", () => {
  it.effect("round-trips and tags the ciphertext with the key version", () =>
    withKeys([{ version: "1", key: k1 }], (enc) =>
      Effect.gen(function*() {
        const c = yield* enc.encrypt(Redacted.make("sk_test_abc123"))
        expect(c).toMatch(/^v1:1:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/)
        expect(c).not.toContain("sk_test")
        const p = yield* enc.decrypt(c)
        expect(Redacted.value(p)).toBe("sk_test_abc123")
        expect(enc.newestVersion).toBe("1")
        expect(enc.needsRotation(c)).toBe(false)
        // random nonce: same plaintext, different ciphertexts
        const c2 = yield* enc.encrypt(Redacted.make("sk_test_abc123"))
        expect(c2).not.toBe(c)
      })))

  it.effect("rotation: old key still reads, writes use the newest", () =>
    Effect.gen(function*() {
      const old = yield* withKeys([{ version: "1", key: k1 }], (enc) => enc.encrypt(Redacted.make("whsec_old")))
      yield* withKeys([{ version: "2", key: k2 }, { version: "1", key: k1 }], (enc) =>
        Effect.gen(function*() {
          expect(enc.newestVersion).toBe("2")
          expect(enc.versions).toEqual(["2", "1"])
          expect(enc.needsRotation(old)).toBe(true)
          expect(Redacted.value(yield* enc.decrypt(old))).toBe("whsec_old")
          const fresh = yield* enc.encrypt(yield* enc.decrypt(old))
          expect(fresh.startsWith("v1:2:")).toBe(true)
          expect(enc.needsRotation(fresh)).toBe(false)
          expect(Option.getOrThrow(enc.versionOf(fresh))).toBe("2")
        }))
    }))

  it.effect("wrong master key (same version) fails with decryption_failed naming the version only", () =>
    Effect.gen(function*() {
      const c = yield* withKeys([{ version: "7", key: k1 }], (enc) => enc.encrypt(Redacted.make("sk_live_secret")))
      const err = yield* withKeys([{ version: "7", key: k2 }], (enc) => Effect.flip(enc.decrypt(c)))
      expect(err).toBeInstanceOf(DecryptionFailed)
      expect(err.code).toBe("decryption_failed")
      expect(err.reason).toBe("authentication_failed")
      expect(err.keyVersion).toBe("7")
      expect(err.message).toContain('"7"')
      const dump = JSON.stringify(err) + String(err)
      expect(dump).not.toContain("sk_live_secret")
      expect(dump).not.toContain(b64(k1))
      expect(dump).not.toContain(b64(k2))
    }))

  it.effect("missing key version fails with decryption_failed", () =>
    Effect.gen(function*() {
      const c = yield* withKeys([{ version: "1", key: k1 }], (enc) => enc.encrypt(Redacted.make("x")))
      const err = yield* withKeys([{ version: "2", key: k2 }], (enc) => Effect.flip(enc.decrypt(c)))
      expect(err.code).toBe("decryption_failed")
      expect(err.reason).toBe("unknown_key_version")
      expect(err.keyVersion).toBe("1")
    }))

  it.effect("detects tampering with the body, the nonce, and the version label", () =>
    withKeys([{ version: "2", key: k2 }, { version: "1", key: k1 }], (enc) =>
      Effect.gen(function*() {
        const c = yield* enc.encrypt(Redacted.make("payload-to-protect"))
        const [v, ver, nonce, body] = c.split(":") as [string, string, string, string]
        const flip = (s: string) => {
          const b = Buffer.from(s, "base64")
          b[0] = b[0]! ^ 0x01
          return b.toString("base64")
        }
        const tampered = [
          [v, ver, nonce, flip(body)].join(":"),
          [v, ver, flip(nonce), body].join(":"),
          // relabelled under the other key version: AAD binds the version
          [v, "1", nonce, body].join(":"),
          // truncated tag
          [v, ver, nonce, Buffer.from(body, "base64").subarray(0, -1).toString("base64")].join(":")
        ]
        for (const t of tampered) {
          const err = yield* Effect.flip(enc.decrypt(t))
          expect(err.code).toBe("decryption_failed")
          expect(err.reason).toBe("authentication_failed")
        }
        for (const m of ["", "garbage", "v2:2:AAAA:BBBB", `v1:2:${nonce}`, "v1:2:!!:??", `v1:2:AAAA:${body}`]) {
          const err = yield* Effect.flip(enc.decrypt(m))
          expect(err.reason).toBe("malformed")
          expect(enc.needsRotation(m)).toBe(true)
        }
      })))

  it.effect("property: decrypt(encrypt(s)) = s for any string", () =>
    withKeys([{ version: "1", key: k1 }], (enc) =>
      Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(fc.string({ unit: "grapheme", maxLength: 200 }), async (s) => {
            const out = await Effect.runPromise(Effect.flatMap(enc.encrypt(Redacted.make(s)), enc.decrypt))
            return Redacted.value(out) === s
          }),
          { numRuns: 200 }
        )
      )))

  describe("FLEXPRICE_ENCRYPTION_KEYS", () => {
    it.effect("accepts several keys newest first", () =>
      Effect.gen(function*() {
        const enc = yield* fromEnv({ FLEXPRICE_ENCRYPTION_KEYS: `2:${b64(k2)}, 1:${b64(k1)}` })
        expect(enc.versions).toEqual(["2", "1"])
      }))

    const bad: Array<[string, string, RegExp]> = [
      ["short key", `1:${b64(randomBytes(16))}`, /decodes to 16 bytes/],
      ["long key", `1:${b64(randomBytes(48))}`, /decodes to 48 bytes/],
      ["no version", b64(k1), /no version prefix/],
      ["duplicate version", `1:${b64(k1)},1:${b64(k2)}`, /appears more than once/],
      ["not base64", `1:${b64(k1).slice(0, 20)}$$$$${b64(k1).slice(24)}`, /not valid base64/],
      ["bad version", `a b:${b64(k1)}`, /invalid version/],
      ["only commas", " , ,", /is empty/]
    ]
    for (const [name, value, pattern] of bad) {
      it.effect(`rejects ${name} with a message naming the variable and no key material`, () =>
        Effect.gen(function*() {
          const { exit, lines } = yield* captureLogs(fromEnv({ FLEXPRICE_ENCRYPTION_KEYS: value }))
          expect(Exit.isFailure(exit)).toBe(true)
          const err = yield* Effect.flip(fromEnv({ FLEXPRICE_ENCRYPTION_KEYS: value }))
          expect(err).toBeInstanceOf(EncryptionConfigError)
          expect(err.code).toBe("encryption_keys_invalid")
          expect(err.message).toContain("FLEXPRICE_ENCRYPTION_KEYS")
          expect(err.message).toContain("32 bytes")
          expect(err.message).toMatch(pattern)
          const everything = [err.message, JSON.stringify(err), String(err), ...lines].join("\n")
          for (const part of value.split(",")) {
            const material = part.slice(part.indexOf(":") + 1).trim()
            if (material.length >= 8) expect(everything).not.toContain(material)
          }
          expect(everything).not.toContain(b64(k1))
          expect(everything).not.toContain(b64(k2))
        }))
    }

    it.effect("with PostgreSQL and no keys, refuses to start", () =>
      Effect.gen(function*() {
        const dir = tmpDir()
        const err = yield* Effect.flip(fromEnv({ FLEXPRICE_DATABASE_URL: "postgres://x@y/z", FLEXPRICE_DATA_DIR: dir }))
        expect(err.code).toBe("encryption_keys_required")
        expect(err.message).toContain("FLEXPRICE_ENCRYPTION_KEYS")
        expect(fs.existsSync(path.join(dir, KEY_FILE_NAME))).toBe(false)
      }))

    it.live("loading the keys is one Encryption.loadKeys span, with no key material on it", () =>
      Effect.gen(function*() {
        const telemetry = yield* TelemetryTest
        yield* fromEnv({ FLEXPRICE_ENCRYPTION_KEYS: `k9:${b64(k1)}` })
        const spans = yield* telemetry.spansNamed("Encryption.loadKeys")
        expect(spans).toHaveLength(1)
        expect(JSON.stringify(spans.map((s) => [s.attributes, s.events]))).not.toContain(b64(k1))
      }).pipe(Effect.provide(Telemetry.layerTest)))

    it.effect("with PostgreSQL and keys, starts", () =>
      Effect.gen(function*() {
        const enc = yield* fromEnv({ FLEXPRICE_DATABASE_URL: "postgres://x@y/z", FLEXPRICE_ENCRYPTION_KEYS: `k9:${b64(k1)}` })
        expect(enc.newestVersion).toBe("k9")
      }))
  })

  describe("embedded key file", () => {
    it.effect("is created once with mode 0600, logged, and reused on later starts", () =>
      Effect.gen(function*() {
        const dir = path.join(tmpDir(), "nested", "data")
        const first = yield* captureLogs(fromEnv({ FLEXPRICE_DATA_DIR: dir }))
        expect(Exit.isSuccess(first.exit)).toBe(true)
        const file = path.join(dir, KEY_FILE_NAME)
        expect(fs.statSync(file).mode & 0o777).toBe(0o600)
        const content = fs.readFileSync(file, "utf8")
        expect(content).toMatch(/^1:[A-Za-z0-9+/]{43}=\n$/)
        expect(first.lines.some((l) => l.includes("created master encryption key file") && l.includes(file))).toBe(true)
        expect(first.lines.join("\n")).not.toContain(content.trim().slice(2))

        const enc1 = Exit.isSuccess(first.exit) ? first.exit.value : undefined
        const c = yield* enc1!.encrypt(Redacted.make("kept across restarts"))

        const second = yield* captureLogs(fromEnv({ FLEXPRICE_DATA_DIR: dir }))
        expect(second.lines.some((l) => l.includes("created"))).toBe(false)
        expect(fs.readFileSync(file, "utf8")).toBe(content)
        const enc2 = Exit.isSuccess(second.exit) ? second.exit.value : undefined
        expect(Redacted.value(yield* enc2!.decrypt(c))).toBe("kept across restarts")
      }))

    it.effect("a corrupt key file is a start-up error naming the file", () =>
      Effect.gen(function*() {
        const dir = tmpDir()
        fs.writeFileSync(path.join(dir, KEY_FILE_NAME), "1:tooshort\n", { mode: 0o600 })
        const err = yield* Effect.flip(fromEnv({ FLEXPRICE_DATA_DIR: dir }))
        expect(err.code).toBe("encryption_keys_invalid")
        expect(err.message).toContain(KEY_FILE_NAME)
      }))

    it.effect("layerFromKeys rejects bad keys too", () =>
      Effect.gen(function*() {
        const r = yield* Effect.either(Layer.build(Encryption.layerFromKeys([{ version: "1", key: randomBytes(31) }])).pipe(Effect.scoped))
        expect(Either.isLeft(r)).toBe(true)
      }))
  })
})
