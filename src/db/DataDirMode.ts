/**
 * The embedded data directory holds every tenant's data and the encrypted Stripe secrets: only
 * the service's user may read it. A directory created by us is 0700, but one that already
 * existed kept its mode, and PGlite writes its files 0666: the tree is tightened at start
 * (directories 0700, files 0600). Symbolic links are not followed.
 */
import * as fs from "node:fs"
import * as path from "node:path"

/** Remove group and other permissions throughout `root`; returns how many entries changed. */
export const tightenDataDir = (root: string): number => {
  let changed = 0
  const stack = [root]
  while (stack.length > 0) {
    const p = stack.pop()!
    const st = fs.lstatSync(p)
    if (st.isSymbolicLink()) continue
    const wanted = st.isDirectory() ? 0o700 : 0o600
    if ((st.mode & 0o777) !== wanted) {
      fs.chmodSync(p, wanted)
      changed++
    }
    if (st.isDirectory()) for (const name of fs.readdirSync(p)) stack.push(path.join(p, name))
  }
  return changed
}
