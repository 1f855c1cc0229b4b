// Builds each JavaScript plugin here (`<name>/app.js`) into `<out>/<name_with_underscores>.wasm`
// against the `plugin` world of `wit/`: `node build.mjs <wit dir> <out dir>`.
// Called by `cargo xtask build-plugins` after `npm ci`. Uses componentize-js's API
// (the `jco componentize` CLI fails on node 20 for any `--wit` path).

import { componentize } from "@bytecodealliance/componentize-js";
import { access, readdir, readFile, writeFile, mkdir } from "node:fs/promises";
import { join } from "node:path";

const [witPath, outDir] = process.argv.slice(2);
if (!witPath || !outDir) {
  console.error("usage: node build.mjs <wit dir> <out dir>");
  process.exit(2);
}
await mkdir(outDir, { recursive: true });
const here = new URL(".", import.meta.url).pathname;
for (const entry of await readdir(here, { withFileTypes: true })) {
  const app = join(here, entry.name, "app.js");
  if (!entry.isDirectory() || !(await access(app).then(() => true, () => false))) continue;
  const source = await readFile(app, "utf8");
  const { component } = await componentize(source, {
    witPath,
    worldName: "plugin",
    // No fetch or HTTP server shims: a plugin imports only what it uses.
    disableFeatures: ["http", "fetch-event"],
  });
  const out = join(outDir, `${entry.name.replaceAll("-", "_")}.wasm`);
  await writeFile(out, component);
  console.log(`built ${out} (${component.length} bytes)`);
}
