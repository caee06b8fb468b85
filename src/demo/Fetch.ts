/**
 * One request to the service as a customer's own code makes it (fetch, JSON in and out); shared
 * by the demo's client and the tests' app client.
 */
export interface HttpAnswer {
  readonly status: number
  /** The body parsed as JSON; the text itself when it is not JSON; undefined when empty. */
  readonly body: unknown
  readonly text: string
  readonly contentType: string | null
}

export const fetchAnswer = async (
  url: string,
  init: { readonly method: string; readonly headers: Record<string, string>; readonly body?: string }
): Promise<HttpAnswer> => {
  const res = await fetch(url, { method: init.method, headers: init.headers, ...(init.body !== undefined ? { body: init.body } : {}) })
  const text = await res.text()
  let body: unknown = undefined
  try {
    body = text === "" ? undefined : JSON.parse(text)
  } catch {
    body = text
  }
  return { status: res.status, body, text, contentType: res.headers.get("content-type") }
}
