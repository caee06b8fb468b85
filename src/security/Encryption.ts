/**
 * Envelope-free secret encryption for tenant Stripe keys and webhook secrets.
 *
 * AES-256-GCM (node:crypto) with a random 12-byte nonce per message. A ciphertext names the
 * master-key version that wrote it, so keys can be rotated while old rows stay readable:
 *
 *   v1:<version>:<base64 nonce>:<base64 ciphertext ‖ 16-byte tag>
 *
 * The `v1:<version>` prefix is bound as additional authenticated data, so relabelling a
 * ciphertext with another version fails authentication rather than decrypting garbage.
 *
 * Master keys come from `FLEXPRICE_ENCRYPTION_KEYS` (`version:base64key`, comma-separated, newest
 * first). Without it, embedded mode keeps a generated key in `<FLEXPRICE_DATA_DIR>/encryption.key`
 * (0600); a PostgreSQL deployment refuses to start, because a per-node key file would make rows
 * written by one replica unreadable by the others.
 */
import { Config, Context, Effect, Layer, Option, Redacted, Schema } from "effect"
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes, type KeyObject } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"

export const ENV_VAR = "FLEXPRICE_ENCRYPTION_KEYS"
export const KEY_FILE_NAME = "encryption.key"
const FORMAT = "v1"
const NONCE_BYTES = 12
const TAG_BYTES = 16
const KEY_BYTES = 32
const VERSION_PATTERN = /^[A-Za-z0-9._-]{1,32}$/
const BASE64_PATTERN = /^[A-Za-z0-9+/_-]+={0,2}$/

// ---------------------------------------------------------------------------------------------
// Errors

/** A ciphertext could not be decrypted. Names the key version only, never key or plaintext. */
export class DecryptionFailed extends Schema.TaggedError<DecryptionFailed>()("DecryptionFailed", {
  code: Schema.Literal("decryption_failed"),
  message: Schema.String,
  keyVersion: Schema.optional(Schema.String),
  reason: Schema.Literal("unknown_key_version", "authentication_failed", "malformed")
}) {}

/** Start-up error: master keys missing or malformed. The message never contains key material. */
export class EncryptionConfigError extends Schema.TaggedError<EncryptionConfigError>()("EncryptionConfigError", {
  code: Schema.Literal("encryption_keys_invalid", "encryption_keys_required", "encryption_key_file_failed"),
  message: Schema.String
}) {}

// ---------------------------------------------------------------------------------------------
// Key ring

export interface MasterKey {
  readonly version: string
  /** Never printed: KeyObject's inspect output does not include the bytes. */
  readonly key: KeyObject
}

/** Newest first; never empty. */
export type KeyRing = readonly [MasterKey, ...Array<MasterKey>]

const invalid = (message: string) => new EncryptionConfigError({ code: "encryption_keys_invalid", message })

/**
 * Parses `version:base64key` entries (newest first). `source` names where they came from
 * (the variable or the key file) in error messages.
 */
export const parseKeyRing = (
  entries: ReadonlyArray<string>,
  source: string
): Effect.Effect<KeyRing, EncryptionConfigError> =>
  Effect.suspend(() => {
    const expected = `expected comma-separated \`version:base64key\` entries, newest first, each key exactly ${KEY_BYTES} bytes after base64 decoding and each version unique`
    const trimmed = entries.map((e) => e.trim()).filter((e) => e.length > 0)
    if (trimmed.length === 0) return Effect.fail(invalid(`${source} is empty: ${expected}`))
    const ring: Array<MasterKey> = []
    for (let i = 0; i < trimmed.length; i++) {
      const entry = trimmed[i]!
      const where = `${source} entry ${i + 1} of ${trimmed.length}`
      const colon = entry.indexOf(":")
      if (colon <= 0) return Effect.fail(invalid(`${where} has no version prefix: ${expected}`))
      const version = entry.slice(0, colon).trim()
      const encoded = entry.slice(colon + 1).trim()
      // The version is echoed only once it is known to look like a version, not like a key.
      if (!VERSION_PATTERN.test(version)) {
        return Effect.fail(invalid(`${where} has an invalid version (allowed: letters, digits, '.', '_', '-', at most 32): ${expected}`))
      }
      if (!BASE64_PATTERN.test(encoded)) {
        return Effect.fail(invalid(`${where} (version "${version}") is not valid base64: ${expected}`))
      }
      const bytes = Buffer.from(encoded, "base64")
      if (bytes.length !== KEY_BYTES) {
        const n = bytes.length
        bytes.fill(0)
        return Effect.fail(invalid(`${where} (version "${version}") decodes to ${n} bytes: ${expected}`))
      }
      if (ring.some((k) => k.version === version)) {
        bytes.fill(0)
        return Effect.fail(invalid(`${where}: version "${version}" appears more than once: ${expected}`))
      }
      ring.push({ version, key: createSecretKey(bytes) })
      bytes.fill(0)
    }
    return Effect.succeed(ring as unknown as KeyRing)
  })

/** Parses the value of `FLEXPRICE_ENCRYPTION_KEYS`. */
export const parseKeysVariable = (raw: Redacted.Redacted<string>) =>
  parseKeyRing(Redacted.value(raw).split(","), ENV_VAR)

/** A fresh random key entry (`version:base64key`), e.g. for `keys generate` or the key file. */
export const generateKeyEntry = (version: string): Redacted.Redacted<string> =>
  Redacted.make(`${version}:${randomBytes(KEY_BYTES).toString("base64")}`)

// ---------------------------------------------------------------------------------------------
// Service

export interface EncryptionService {
  /** Encrypts under the newest key. */
  readonly encrypt: (plain: Redacted.Redacted<string>) => Effect.Effect<string>
  readonly decrypt: (cipher: string) => Effect.Effect<Redacted.Redacted<string>, DecryptionFailed>
  /** Version written by `encrypt`. */
  readonly newestVersion: string
  /** All versions that can be read, newest first. */
  readonly versions: ReadonlyArray<string>
  /** True when the ciphertext was not written under the newest key (or is unreadable). */
  readonly needsRotation: (cipher: string) => boolean
  /** The key version a ciphertext names, if it is well formed. */
  readonly versionOf: (cipher: string) => Option.Option<string>
}

interface Parsed {
  readonly version: string
  readonly nonce: Buffer
  readonly body: Buffer
}

const parseCipher = (cipher: string): Parsed | DecryptionFailed => {
  const parts = cipher.split(":")
  const version = parts[1]
  const knownVersion = version !== undefined && VERSION_PATTERN.test(version) ? version : undefined
  const malformed = (why: string) =>
    new DecryptionFailed({
      code: "decryption_failed",
      message: `ciphertext is malformed (${why})`,
      keyVersion: knownVersion,
      reason: "malformed"
    })
  if (parts.length !== 4 || parts[0] !== FORMAT) return malformed(`expected ${FORMAT}:<version>:<nonce>:<ciphertext>`)
  if (knownVersion === undefined) return malformed("invalid key version")
  const [, , n, b] = parts as [string, string, string, string]
  if (!BASE64_PATTERN.test(n) || !BASE64_PATTERN.test(b)) return malformed("not base64")
  const nonce = Buffer.from(n, "base64")
  const body = Buffer.from(b, "base64")
  if (nonce.length !== NONCE_BYTES) return malformed("bad nonce length")
  if (body.length < TAG_BYTES) return malformed("too short")
  return { version: knownVersion, nonce, body }
}

const aad = (version: string) => Buffer.from(`${FORMAT}:${version}`, "utf8")

export const makeService = (ring: KeyRing): EncryptionService => {
  const newest = ring[0]
  const byVersion = new Map(ring.map((k) => [k.version, k.key]))

  const encrypt = Effect.fn("Encryption.encrypt", { attributes: { "encryption.key_version": newest.version } })((plain: Redacted.Redacted<string>) =>
    Effect.sync(() => {
      const nonce = randomBytes(NONCE_BYTES)
      const cipher = createCipheriv("aes-256-gcm", newest.key, nonce, { authTagLength: TAG_BYTES })
      cipher.setAAD(aad(newest.version))
      const body = Buffer.concat([cipher.update(Redacted.value(plain), "utf8"), cipher.final(), cipher.getAuthTag()])
      return `${FORMAT}:${newest.version}:${nonce.toString("base64")}:${body.toString("base64")}`
    })
  )

  const decrypt = Effect.fn("Encryption.decrypt")((cipherText: string) =>
    Effect.suspend(() => {
      const parsed = parseCipher(cipherText)
      if (parsed instanceof DecryptionFailed) return Effect.fail(parsed)
      const key = byVersion.get(parsed.version)
      if (key === undefined) {
        return Effect.fail(
          new DecryptionFailed({
            code: "decryption_failed",
            message: `no master key with version "${parsed.version}" is configured (configured: ${[...byVersion.keys()].join(", ")})`,
            keyVersion: parsed.version,
            reason: "unknown_key_version"
          })
        )
      }
      try {
        const decipher = createDecipheriv("aes-256-gcm", key, parsed.nonce, { authTagLength: TAG_BYTES })
        decipher.setAAD(aad(parsed.version))
        decipher.setAuthTag(parsed.body.subarray(parsed.body.length - TAG_BYTES))
        const plain = Buffer.concat([decipher.update(parsed.body.subarray(0, parsed.body.length - TAG_BYTES)), decipher.final()])
        const text = plain.toString("utf8")
        plain.fill(0)
        return Effect.succeed(Redacted.make(text))
      } catch {
        return Effect.fail(
          new DecryptionFailed({
            code: "decryption_failed",
            message: `authentication failed under master key version "${parsed.version}" (wrong key or tampered ciphertext)`,
            keyVersion: parsed.version,
            reason: "authentication_failed"
          })
        )
      }
    })
  )

  const versionOf = (cipherText: string): Option.Option<string> => {
    const parsed = parseCipher(cipherText)
    return parsed instanceof DecryptionFailed ? Option.none() : Option.some(parsed.version)
  }

  return {
    encrypt,
    decrypt,
    newestVersion: newest.version,
    versions: ring.map((k) => k.version),
    needsRotation: (c) => Option.getOrUndefined(versionOf(c)) !== newest.version,
    versionOf
  }
}

// ---------------------------------------------------------------------------------------------
// Key file (embedded mode only)

const keyFileError = (message: string) => new EncryptionConfigError({ code: "encryption_key_file_failed", message })

/**
 * Reads `<dataDir>/encryption.key`, creating it (0600, one `version:base64key` line) when absent.
 * `wx` makes creation atomic: two processes starting together both end up with the same key.
 */
export const loadOrCreateKeyFile = (dataDir: string): Effect.Effect<KeyRing, EncryptionConfigError> =>
  Effect.gen(function*() {
    const file = path.join(dataDir, KEY_FILE_NAME)
    const created = yield* Effect.try({
      try: () => {
        fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 })
        try {
          const fd = fs.openSync(file, "wx", 0o600)
          try {
            fs.writeFileSync(fd, `${Redacted.value(generateKeyEntry("1"))}\n`)
          } finally {
            fs.closeSync(fd)
          }
          // umask cannot widen 0600, but an odd filesystem might ignore the mode argument.
          fs.chmodSync(file, 0o600)
          return true
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "EEXIST") return false
          throw e
        }
      },
      catch: (e) => keyFileError(`cannot create ${file}: ${(e as NodeJS.ErrnoException).code ?? "error"}`)
    })
    if (created) {
      yield* Effect.logWarning(
        `created master encryption key file ${file} (mode 0600); back it up — secrets stored in ${dataDir} cannot be read without it. Set ${ENV_VAR} to manage keys yourself.`
      )
    }
    const text = yield* Effect.try({
      try: () => fs.readFileSync(file, "utf8"),
      catch: (e) => keyFileError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? "error"}`)
    })
    const mode = yield* Effect.sync(() => fs.statSync(file).mode & 0o777)
    if ((mode & 0o077) !== 0) {
      yield* Effect.logWarning(`${file} is readable by group or others (mode ${mode.toString(8)}); expected 0600`)
    }
    const lines = text.split(/\r?\n/).filter((l) => l.trim() !== "" && !l.trim().startsWith("#"))
    return yield* parseKeyRing(lines, file)
  })

// ---------------------------------------------------------------------------------------------
// Tag and layers

export interface KeyInput {
  readonly version: string
  /** Raw 32 bytes or their base64. */
  readonly key: Uint8Array | Redacted.Redacted<string> | string
}

/** The service `Encryption.layerFromEnv` builds (the rules are on the layer). */
const loadKeys = Effect.fn("Encryption.loadKeys")(function* () {
  const cfg = yield* Config.all({
    keys: Config.option(Config.redacted(ENV_VAR)),
    dataDir: Config.string("FLEXPRICE_DATA_DIR").pipe(Config.withDefault("./.flexprice")),
    databaseUrl: Config.string("FLEXPRICE_DATABASE_URL").pipe(Config.withDefault(""))
  }).pipe(Effect.mapError((e) => invalid(`cannot read encryption configuration: ${e._op}`)))
  if (Option.isSome(cfg.keys) && Redacted.value(cfg.keys.value).trim() !== "") {
    return makeService(yield* parseKeysVariable(cfg.keys.value))
  }
  if (cfg.databaseUrl.trim() !== "") {
    return yield* new EncryptionConfigError({
      code: "encryption_keys_required",
      message: `${ENV_VAR} is required when FLEXPRICE_DATABASE_URL is set: expected comma-separated \`version:base64key\` entries, newest first, each key 32 bytes after base64 decoding (generate one with: node -e "console.log('1:'+require('crypto').randomBytes(32).toString('base64'))")`
    })
  }
  return makeService(yield* loadOrCreateKeyFile(cfg.dataDir))
})

export class Encryption extends Context.Tag("flexprice/Encryption")<Encryption, EncryptionService>() {
  /**
   * From `FLEXPRICE_ENCRYPTION_KEYS`; otherwise the embedded key file, unless
   * `FLEXPRICE_DATABASE_URL` is set, in which case start-up fails.
   */
  static readonly layerFromEnv: Layer.Layer<Encryption, EncryptionConfigError> = Layer.effect(
    Encryption,
    loadKeys()
  )

  /** For tests and tools: keys given directly, newest first. */
  static readonly layerFromKeys = (keys: ReadonlyArray<KeyInput>): Layer.Layer<Encryption, EncryptionConfigError> =>
    Layer.effect(Encryption, Encryption.fromKeys(keys))

  static readonly fromKeys = (keys: ReadonlyArray<KeyInput>): Effect.Effect<EncryptionService, EncryptionConfigError> =>
    parseKeyRing(
      keys.map((k) => {
        const b64 = typeof k.key === "string"
          ? k.key
          : Redacted.isRedacted(k.key)
          ? Redacted.value(k.key)
          : Buffer.from(k.key).toString("base64")
        return `${k.version}:${b64}`
      }),
      "encryption keys"
    ).pipe(Effect.map(makeService))
}
