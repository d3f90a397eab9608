// Builds the JavaScript allow-list into a component:  node build.mjs OUT.wasm
// (Calls the componentize-js API directly; the `jco componentize` CLI fails here.)
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out) {
  console.error("usage: node build.mjs OUT.wasm");
  process.exit(2);
}
try {
  const { component } = await componentize({
    sourcePath: resolve(here, "allowlist.js"),
    witPath: resolve(here, "../../../wit"),
    worldName: "policy-plugin",
    // A pure component: no WASI imports beyond what the world asks for.
    disableFeatures: ["random", "stdio", "clocks", "http", "fetch-event"],
  });
  await writeFile(out, component);
} catch (e) {
  console.error(`componentize-js failed: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
}
