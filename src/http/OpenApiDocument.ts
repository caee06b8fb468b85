/** The OpenAPI document generated from the HttpApi definitions (committed as openapi.json). */
import { OpenApi } from "@effect/platform"
import { FlexPriceApi } from "./Api.js"

export const openApiDocument = () => OpenApi.fromApi(FlexPriceApi)

/** Stable text form: what `npm run openapi` writes and the test compares. */
export const openApiText = () => `${JSON.stringify(openApiDocument(), null, 2)}\n`
