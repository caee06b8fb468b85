/**
 * A tracer that records every span it opens, over the current tracer (which still does the work):
 * `Effect.withTracer(effect, tracer)` and read `recorded` — for tests that check span names and
 * attributes without an exporter.
 */
import { Effect, Tracer } from "effect"

export const recordingTracer = Effect.map(Effect.tracer, (base) => {
  const recorded: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind, options) => {
      const span = base.span(name, parent, context, links, startTime, kind, options)
      recorded.push(span)
      return span
    },
    context: (f, fiber) => base.context(f, fiber)
  })
  return { tracer, recorded }
})
