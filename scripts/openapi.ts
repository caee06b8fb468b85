/** Regenerates openapi.json from the HttpApi definitions: `npm run openapi`. */
import * as fs from "node:fs"
import { openApiText } from "../src/http/OpenApiDocument.js"

fs.writeFileSync(new URL("../openapi.json", import.meta.url), openApiText())
console.error("wrote openapi.json")
