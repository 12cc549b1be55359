// Compiles the dev-chain contracts with solc-js (the npm `solc` package, pinned in
// package-lock.json) and writes their runtime bytecode to contracts.json.
//   node deploy/devnet/build-contracts.mjs           write contracts.json
//   node deploy/devnet/build-contracts.mjs --check   fail if contracts.json does not match the sources
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = dirname(fileURLToPath(import.meta.url));
const artifactPath = join(here, "contracts.json");
const sources = ["TestUSDC.sol", "BatchCall.sol", "BatchSettlement.sol", "DepositCollector.sol"];

function compile() {
  const input = {
    language: "Solidity",
    sources: Object.fromEntries(
      sources.map((file) => [file, { content: readFileSync(join(here, "contracts", file), "utf8") }]),
    ),
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "cancun",
      metadata: { bytecodeHash: "none" },
      outputSelection: { "*": { "*": ["evm.deployedBytecode.object", "abi"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  if (errors.length > 0) {
    throw new Error(errors.map((e) => e.formattedMessage).join("\n"));
  }
  const artifact = { compiler: solc.version(), contracts: {} };
  for (const file of sources) {
    for (const [name, contract] of Object.entries(output.contracts[file])) {
      // Interfaces (no code) are not placed on the chain.
      if (contract.evm.deployedBytecode.object === "") continue;
      artifact.contracts[name] = {
        source: `contracts/${file}`,
        abi: contract.abi,
        deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
      };
    }
  }
  return JSON.stringify(artifact, null, 2) + "\n";
}

const fresh = compile();
if (process.argv.includes("--check")) {
  const committed = readFileSync(artifactPath, "utf8");
  if (committed !== fresh) {
    console.error("deploy/devnet/contracts.json does not match the Solidity sources: run node deploy/devnet/build-contracts.mjs");
    process.exit(1);
  }
  console.log("deploy/devnet/contracts.json matches the sources");
} else {
  writeFileSync(artifactPath, fresh);
  console.log(`wrote ${artifactPath}`);
}
