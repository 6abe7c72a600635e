#!/usr/bin/env node
// Compiles contracts/src/*.sol with the pinned solcjs (contracts/node_modules) into
// contracts/artifacts/<Name>.json = {"abi","bytecode","contractName"}.
// Output is deterministic (sorted keys, two-space indent, trailing newline) so the
// committed artifacts can be checked for staleness by recompiling into another directory.
//
// Usage: node scripts/compile_contracts.mjs [OUTPUT_DIR]

import { createRequire } from "node:module";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const contractsDir = path.join(root, "contracts");
const srcDir = path.join(contractsDir, "src");
const nodeModules = path.join(contractsDir, "node_modules");
const outDir = path.resolve(process.argv[2] ?? path.join(contractsDir, "artifacts"));

const require = createRequire(path.join(contractsDir, "package.json"));
let solc;
try {
  solc = require("solc");
} catch (err) {
  console.error(`solc is not installed: run "npm ci" in ${contractsDir} (${err.message})`);
  process.exit(2);
}

const sourceFiles = fs.readdirSync(srcDir).filter((f) => f.endsWith(".sol")).sort();
if (sourceFiles.length === 0) {
  console.error(`no .sol files in ${srcDir}`);
  process.exit(2);
}
const sources = {};
for (const file of sourceFiles) {
  sources[`src/${file}`] = { content: fs.readFileSync(path.join(srcDir, file), "utf8") };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    evmVersion: "cancun",
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};

// Resolves imports: "@openzeppelin/..." from contracts/node_modules, others from contracts/.
function findImports(importPath) {
  const base = importPath.startsWith("@") ? nodeModules : contractsDir;
  const full = path.resolve(base, importPath);
  if (!full.startsWith(base + path.sep)) return { error: `import outside the project: ${importPath}` };
  try {
    return { contents: fs.readFileSync(full, "utf8") };
  } catch (err) {
    return { error: `cannot read ${importPath}: ${err.message}` };
  }
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) {
  if (e.severity !== "error") console.error(e.formattedMessage ?? e.message);
}
if (errors.length > 0) {
  for (const e of errors) console.error(e.formattedMessage ?? e.message);
  console.error(`compilation failed with ${errors.length} error(s)`);
  process.exit(1);
}

// Recursively sorts object keys so JSON.stringify is deterministic.
function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value).sort()) out[key] = sortKeys(value[key]);
    return out;
  }
  return value;
}

fs.mkdirSync(outDir, { recursive: true });
const written = [];
for (const unit of Object.keys(sources)) {
  const contracts = output.contracts?.[unit] ?? {};
  for (const name of Object.keys(contracts).sort()) {
    const c = contracts[name];
    const bytecode = c.evm?.bytecode?.object ?? "";
    if (bytecode.length === 0) continue; // interfaces and abstract contracts
    const artifact = sortKeys({ contractName: name, abi: c.abi, bytecode: `0x${bytecode}` });
    fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(artifact, null, 2) + "\n");
    written.push(name);
  }
}
console.log(`solc ${solc.version()}: wrote ${written.join(", ")} to ${outDir}`);
