/**
 * The documented response bodies of a request, found from its method and path at the type level
 * (#14 item 5): the path the test writes (`/v1/customers/${id}?x=1`) is matched segment by segment
 * against the templates of the generated `paths` (test/support/generated/api.d.ts, made from
 * openapi.json by openapi-typescript), so a suite reads `answer.data.customers` typed as the
 * document says — and the shared client checks at run time that the body is what the document says.
 */
import type { components, paths } from "./generated/api.js"

export type Method = "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS"

type PathOnly<P extends string> = P extends `${infer A}?${string}` ? A : P

type Segments<P extends string> = P extends `${infer A}/${infer B}` ? [A, ...Segments<B>] : [P]

/** One segment of a written path against one of a template: `{name}` takes any segment. */
type SegmentMatches<Written extends string, Template extends string> = Template extends `{${string}}`
  ? true
  : [Written] extends [Template]
    ? true
    : false

type SegmentsMatch<W extends ReadonlyArray<string>, T extends ReadonlyArray<string>> = W extends [infer W1 extends string, ...infer WRest extends Array<string>]
  ? T extends [infer T1 extends string, ...infer TRest extends Array<string>]
    ? SegmentMatches<W1, T1> extends true
      ? SegmentsMatch<WRest, TRest>
      : false
    : false
  : T extends []
    ? true
    : false

/** The templates a written path matches; literal templates win over parameterised ones. */
export type RouteOf<P extends string> = PathOnly<P> extends keyof paths
  ? PathOnly<P>
  : { [K in keyof paths & string]: SegmentsMatch<Segments<PathOnly<P>>, Segments<K>> extends true ? K : never }[keyof paths & string]

type OperationOf<M extends string, P extends string> = RouteOf<P> extends infer R extends keyof paths
  ? R extends keyof paths
    ? Lowercase<M> extends keyof paths[R]
      ? NonNullable<paths[R][Lowercase<M>]>
      : never
    : never
  : never

type JsonOf<R> = R extends { content: { "application/json": infer B } } ? B : never

/** The JSON bodies the document gives the 2xx answers of `M P` (union when there are several). */
export type SuccessBody<M extends string, P extends string> = OperationOf<M, P> extends { responses: infer Rs }
  ? { [S in keyof Rs]: `${S & number}` extends `2${string}` ? JsonOf<Rs[S]> : never }[keyof Rs]
  : never

/** Every error the API answers with: `{"error":{"code","message","details"}}`. */
export type ErrorEnvelope = components["schemas"]["NotFound"]
