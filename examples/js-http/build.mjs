// Builds app.js into a wasi:http/proxy component with componentize-js:
//   node build.mjs COMPONENTIZE_JS_ENTRY WASI_WIT_DIR WASI_VERSION WORK_DIR OUT.wasm
// The WASI WIT comes from the wasmtime-wasi-http crate the shim is built with; it is copied
// into WORK_DIR with its packages renamed to WASI_VERSION, the wasi:http version the
// pinned componentize-js's engine exports (the 0.2 interfaces are the same; gates that name
// a newer release are moved down to it, as the WIT resolver refuses a gate newer than its
// package).
import { cp, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const [entry, wasiWit, version, work, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node build.mjs ENTRY WASI_WIT VERSION WORK_DIR OUT');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const minor = (v) => Number(v.split('.')[2]);
const wit = join(work, 'wit');
await rm(work, { recursive: true, force: true });
await mkdir(wit, { recursive: true });
await cp(join(wasiWit, 'deps'), join(wit, 'deps'), { recursive: true });
for (const file of await readdir(join(wit, 'deps'))) {
  const path = join(wit, 'deps', file);
  const text = (await readFile(path, 'utf8'))
    .replace(/@0\.2\.\d+/g, `@${version}`)
    .replace(/version = (0\.2\.\d+)/g, (gate, v) =>
      minor(v) > minor(version) ? `version = ${version}` : gate);
  await writeFile(path, text);
}
await writeFile(
  join(wit, 'world.wit'),
  `package local:js-http;\n\nworld handler {\n  export wasi:http/incoming-handler@${version};\n}\n`,
);
const { componentize } = await import(pathToFileURL(entry).href);
const { component } = await componentize({
  sourcePath: join(here, 'app.js'),
  witPath: wit,
  worldName: 'handler',
});
await writeFile(out, component);
