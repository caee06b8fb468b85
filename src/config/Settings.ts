/** The shape every numeric setting takes: read, defaulted, and refused with its range when out of it. */
import { Config } from "effect"

/**
 * An integer variable with a default, at least `min` (and at most `max`); a value out of range
 * fails configuration with `expected an integer ≥ min` / `between min and max` (plus `why`).
 */
export const integerSetting = (
  name: string,
  options: { readonly default: number; readonly min: number; readonly max?: number; readonly why?: string }
): Config.Config<number> => {
  const { max, min } = options
  const range = max === undefined ? `≥ ${min}` : `between ${min} and ${max}`
  // validated before the default applies, so a refusal names the variable
  return Config.integer(name).pipe(
    Config.validate({
      message: `expected an integer ${range}${options.why ? ` (${options.why})` : ""}`,
      validation: (n) => n >= min && (max === undefined || n <= max)
    }),
    Config.withDefault(options.default)
  )
}
