// The x402-gateway dev chain: anvil (pinned npm build) as "Base Sepolia" (chain id 84532) with
//  - TestUSDC (EIP-3009, EIP-712 name "USDC", version "2") at Base Sepolia's USDC address,
//  - BatchCall (Multicall3's aggregate3 ABI) at Multicall3's canonical address,
//  - BatchSettlement (the x402 `batch-settlement` escrow) and ERC3009DepositCollector at the
//    scheme's canonical addresses (the official client hard-codes them): this project's own
//    implementation, ABI-compatible with the official contracts. setCode runs no constructor;
//    neither contract has immutables or constructor-set storage (the EIP-712 domain uses
//    address(this), the collector's escrow address is a constant), so nothing else is set.
//  - 1,000,000 test USDC minted to each of anvil's ten well-known accounts (or more accounts
//    of the same mnemonic: payers need tokens, not ether, since EIP-3009 is gasless for them).
// Usable as a module (startDevnet) by the tests and benches, or as a program:
//   node deploy/devnet/devnet.mjs [--port 8545] [--host 127.0.0.1]     runs until SIGINT/SIGTERM
//   (--host 0.0.0.0 in a container, so other containers reach the chain; never on a shared network)
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { encodeFunctionData, decodeFunctionResult } from "viem";
import { mnemonicToAccount } from "viem/accounts";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const artifact = JSON.parse(readFileSync(join(here, "contracts.json"), "utf8"));

export const CHAIN_ID = 84532;
export const NETWORK = "eip155:84532";
export const USDC_ADDRESS = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
export const MULTICALL3_ADDRESS = "0xcA11bde05977b3631167028862bE2a173976CA11";
export const TEST_MNEMONIC = "test test test test test test test test test test test junk";
export const MINTED_PER_ACCOUNT = 1_000_000n * 10n ** 6n;
export const TEST_USDC_ABI = artifact.contracts.TestUSDC.abi;
/** The batch-settlement scheme's canonical addresses (hard-coded in @x402/evm). */
export const BATCH_SETTLEMENT_ADDRESS = "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003";
export const DEPOSIT_COLLECTOR_ADDRESS = "0x4020806089470a89826cB9fB1f4059150b550004";
export const BATCH_SETTLEMENT_ABI = artifact.contracts.BatchSettlement.abi;
export const DEPOSIT_COLLECTOR_ABI = artifact.contracts.ERC3009DepositCollector.abi;

const derivedAccounts = new Map();

/** Anvil's well-known dev accounts: index 0 settles, 1 receives payments, 2.. pay. */
export function devAccount(index) {
  // Derivation stretches the mnemonic each time (tens of ms): a soak asks for 50 payers often.
  if (!derivedAccounts.has(index)) derivedAccounts.set(index, mnemonicToAccount(TEST_MNEMONIC, { addressIndex: index }));
  return derivedAccounts.get(index);
}

export function devPrivateKey(index) {
  const key = devAccount(index).getHdKey().privateKey;
  return "0x" + Buffer.from(key).toString("hex");
}

export function anvilBinary() {
  const pkg = require.resolve("@foundry-rs/anvil-linux-amd64/package.json");
  return join(dirname(pkg), "bin", "anvil");
}

export async function rpc(url, method, params = []) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
  });
  const body = await response.json();
  if (body.error) {
    throw new Error(`${method}: ${body.error.message}`);
  }
  return body.result;
}

/** The test USDC balance of `address`, in atomic units. */
export async function balanceOf(url, address) {
  const data = encodeFunctionData({ abi: TEST_USDC_ABI, functionName: "balanceOf", args: [address] });
  const result = await rpc(url, "eth_call", [{ to: USDC_ADDRESS, data }, "latest"]);
  return decodeFunctionResult({ abi: TEST_USDC_ABI, functionName: "balanceOf", data: result });
}

async function waitForRpc(url, child, deadlineMs) {
  const deadline = Date.now() + deadlineMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(`anvil exited with code ${child.exitCode}`);
    }
    try {
      if ((await rpc(url, "eth_chainId")) === "0x" + CHAIN_ID.toString(16)) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`anvil did not answer on ${url} within ${deadlineMs} ms`);
}

/** Writes the contracts and mints test USDC to dev accounts 0..`fundedAccounts` on a running anvil. */
export async function provisionChain(url, { fundedAccounts = 10 } = {}) {
  await rpc(url, "anvil_setCode", [USDC_ADDRESS, artifact.contracts.TestUSDC.deployedBytecode]);
  await rpc(url, "anvil_setCode", [MULTICALL3_ADDRESS, artifact.contracts.BatchCall.deployedBytecode]);
  await rpc(url, "anvil_setCode", [BATCH_SETTLEMENT_ADDRESS, artifact.contracts.BatchSettlement.deployedBytecode]);
  await rpc(url, "anvil_setCode", [DEPOSIT_COLLECTOR_ADDRESS, artifact.contracts.ERC3009DepositCollector.deployedBytecode]);
  const minter = devAccount(0).address;
  for (let i = 0; i < fundedAccounts; i++) {
    const data = encodeFunctionData({
      abi: TEST_USDC_ABI,
      functionName: "mint",
      args: [devAccount(i).address, MINTED_PER_ACCOUNT],
    });
    await rpc(url, "eth_sendTransaction", [{ from: minter, to: USDC_ADDRESS, data }]);
  }
}

/**
 * Starts and provisions anvil. By default every transaction is mined at once; `blockSeconds`
 * mines a block every that many seconds instead (Base: 2), once provisioning is done so it
 * does not wait for blocks, and `blockGasLimit` sets the block gas limit (anvil's default:
 * 30M; Base's is several times that).
 */
export async function startDevnet({ port = 8545, host = "127.0.0.1", quiet = true, blockSeconds = 0, blockGasLimit = null, fundedAccounts = 10 } = {}) {
  const args = ["--chain-id", String(CHAIN_ID), "--port", String(port), "--host", host, "--silent"];
  if (blockGasLimit) args.push("--gas-limit", String(blockGasLimit));
  const child = spawn(anvilBinary(), args, { stdio: quiet ? "ignore" : "inherit" });
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitForRpc(url, child, 15_000);
    await provisionChain(url, { fundedAccounts });
    if (blockSeconds) await rpc(url, "evm_setIntervalMining", [blockSeconds]);
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  return {
    url,
    process: child,
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await new Promise((resolve) => child.once("exit", resolve));
      }
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const portFlag = process.argv.indexOf("--port");
  const port = portFlag > 0 ? Number(process.argv[portFlag + 1]) : 8545;
  const hostFlag = process.argv.indexOf("--host");
  const host = hostFlag > 0 ? process.argv[hostFlag + 1] : "127.0.0.1";
  const devnet = await startDevnet({ port, host });
  console.log(`dev chain ready: ${devnet.url} (chain id ${CHAIN_ID})`);
  console.log(`  test USDC  ${USDC_ADDRESS} (EIP-712 "USDC" / "2", 6 decimals)`);
  console.log(`  Multicall3 ${MULTICALL3_ADDRESS}`);
  console.log(`  batch-settlement escrow ${BATCH_SETTLEMENT_ADDRESS}, ERC-3009 deposit collector ${DEPOSIT_COLLECTOR_ADDRESS}`);
  console.log(`  settlement key: anvil account 0 ${devAccount(0).address}`);
  console.log(`  payTo:          anvil account 1 ${devAccount(1).address}`);
  const stop = async () => {
    await devnet.stop();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  devnet.process.on("exit", (code) => process.exit(code ?? 1));
}
