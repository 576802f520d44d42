// Offline build of storage/ledger/contracts/src/*.sol with solcjs (standard JSON, OpenZeppelin from
// node_modules through the import callback). Writes artifacts/<Name>.json for each contract defined in
// src/, byte-for-byte reproducible: sorted keys, no timestamps, no absolute paths.
//
//   npm ci && node build.mjs                 # (re)write artifacts/
//   node build.mjs --out DIR                 # write elsewhere (the tests compare with artifacts/)
//   node build.mjs --check                   # exit 1 when artifacts/ differs from a fresh build
//
// sourceHash = sha256 of the canonical JSON (sorted keys, no spaces) of
//   {"compiler": <solc version>, "dependencies": {...}, "settings": <settings>,
//    "sources": {"src/<File>.sol": <sha256 hex of the file>, ...}}
// tests/test_contracts.py recomputes it in Python from the .sol files and the artifact's own fields.
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const solc = require("solc");

// What decides the bytecode. Prague: the fork py-evm / eth-tester run (Osaka's CLZ is not there).
export const SETTINGS = {
  evmVersion: "prague",
  optimizer: { enabled: true, runs: 1000 },
  viaIR: true,
  metadata: { bytecodeHash: "ipfs" },
};
const CONTRACTS_IN = "src";

function canonical(value) {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === "object") {
    const out = {};
    for (const k of Object.keys(value).sort()) out[k] = canonical(value[k]);
    return out;
  }
  return value;
}
const sha256 = (data) => createHash("sha256").update(data).digest("hex");

function args() {
  const a = process.argv.slice(2);
  const opts = { out: join(here, "artifacts"), check: false };
  for (let i = 0; i < a.length; i++) {
    if (a[i] === "--out") opts.out = resolve(a[++i]);
    else if (a[i] === "--check") opts.check = true;
    else throw new Error(`unknown argument ${a[i]}`);
  }
  return opts;
}

function findImport(path) {
  const pkgPath = join(here, "node_modules", path);
  if (path.startsWith("@openzeppelin/contracts/") && existsSync(pkgPath)) {
    return { contents: readFileSync(pkgPath, "utf8") };
  }
  return { error: `import not found: ${path} (run npm ci in storage/ledger/contracts)` };
}

export function build() {
  const files = readdirSync(join(here, CONTRACTS_IN)).filter((f) => f.endsWith(".sol")).sort();
  const sources = {};
  const sourceDigests = {};
  for (const f of files) {
    const name = `${CONTRACTS_IN}/${f}`;
    const content = readFileSync(join(here, name), "utf8");
    sources[name] = { content };
    sourceDigests[name] = sha256(content);
  }
  const oz = JSON.parse(readFileSync(join(here, "node_modules/@openzeppelin/contracts/package.json"), "utf8"));
  const dependencies = { "@openzeppelin/contracts": oz.version };
  const version = solc.version();
  const settings = canonical(SETTINGS);
  const sourceHash = sha256(
    JSON.stringify(canonical({ compiler: version, dependencies, settings, sources: sourceDigests })),
  );
  const input = {
    language: "Solidity",
    sources,
    settings: {
      ...settings,
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  let failed = false;
  for (const e of output.errors ?? []) {
    process.stderr.write(e.formattedMessage ?? e.message);
    if (e.severity === "error") failed = true;
  }
  if (failed) throw new Error("compilation failed");
  const artifacts = {};
  for (const name of Object.keys(sources)) {
    for (const [contractName, c] of Object.entries(output.contracts[name] ?? {})) {
      artifacts[contractName] = canonical({
        contractName,
        sourceName: name,
        abi: c.abi,
        bytecode: "0x" + c.evm.bytecode.object,
        deployedBytecode: "0x" + c.evm.deployedBytecode.object,
        compiler: { version, settings },
        dependencies,
        sourceHash,
      });
    }
  }
  return artifacts;
}

function main() {
  const opts = args();
  const artifacts = build();
  let differs = false;
  if (!opts.check) mkdirSync(opts.out, { recursive: true });
  for (const name of Object.keys(artifacts).sort()) {
    const text = JSON.stringify(artifacts[name], null, 2) + "\n";
    const path = join(opts.out, `${name}.json`);
    if (opts.check) {
      const old = existsSync(path) ? readFileSync(path, "utf8") : null;
      if (old !== text) {
        differs = true;
        console.error(`${path} differs from a fresh build`);
      }
    } else {
      writeFileSync(path, text);
      const size = (artifacts[name].deployedBytecode.length - 2) / 2;
      console.log(`${path}  (${size} bytes deployed)`);
    }
  }
  if (differs) process.exit(1);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
