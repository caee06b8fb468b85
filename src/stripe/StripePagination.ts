/**
 * Stripe's list endpoints page with `starting_after` = the last object id of the previous page
 * and `has_more` (https://docs.stripe.com/api/pagination). One reader for all of them: a lazy
 * stream that requests the next page only when it is pulled, and stops after a page without
 * `has_more` or without objects (an empty page cannot give the next cursor).
 */
import { Chunk, Effect, Option, Stream } from "effect"

/** The part of a Stripe list object the reader uses. */
export interface ListObject<T extends { readonly id: string }> {
  readonly data: ReadonlyArray<T>
  readonly has_more: boolean
}

export interface Page<T> {
  readonly items: ReadonlyArray<T>
  /** Cursor to resume after this page (its last id), or the incoming cursor on an empty page. */
  readonly lastId: string | undefined
  /** Another page follows (Stripe's `has_more` on a page that has objects). */
  readonly hasMore: boolean
}

/** Pages from `startingAfter` (exclusive) on; `fetch` requests one page after the given cursor. */
export const pages = <T extends { readonly id: string }, E, R>(
  fetch: (startingAfter: string | undefined) => Effect.Effect<ListObject<T>, E, R>,
  startingAfter?: string
): Stream.Stream<Page<T>, E, R> =>
  Stream.paginateEffect(startingAfter, (cursor) =>
    Effect.map(fetch(cursor), (list) => {
      const page: Page<T> = {
        items: list.data,
        lastId: list.data.length > 0 ? list.data[list.data.length - 1]!.id : cursor,
        hasMore: list.has_more && list.data.length > 0
      }
      return [page, page.hasMore ? Option.some(page.lastId) : Option.none()] as const
    })
  )

/** Every object of every page, in Stripe's order, each mapped by `f` as its page arrives. */
export const all = <T extends { readonly id: string }, B, E, R>(
  fetch: (startingAfter: string | undefined) => Effect.Effect<ListObject<T>, E, R>,
  f: (item: T) => B
): Effect.Effect<ReadonlyArray<B>, E, R> =>
  pages(fetch).pipe(
    Stream.mapConcat((page) => page.items.map(f)),
    Stream.runCollect,
    Effect.map(Chunk.toReadonlyArray)
  )
