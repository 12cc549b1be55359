// Settlement that keeps up: several settlement transactions in flight at consecutive account
// nonces, a transaction stuck under the base fee replaced at its nonce with higher fees, a
// crash with transactions in flight (one of them lost by the node), a nonce gap below the
// settler's transactions, and two settlement keys. Every scenario ends with the ledger:
// payTo's balance rose by exactly the journaled payments, each settled once.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { privateKeyToAccount } from "viem/accounts";
import { devPrivateKey, rpc } from "../../deploy/devnet/devnet.mjs";
import { startChainAndUpstream, startTestGateway, freshAddress, balanceOf, authorizationState, eventually, runCli, b64, unb64 } from "./harness.mjs";
import { signPayment } from "./payments.mjs";

const PRICE = 1000n;
const SETTLER = privateKeyToAccount(devPrivateKey(0)).address;
const payers = [6, 7, 8, 9].map(devPrivateKey);
let env;
let gw;

before(async () => {
  env = await startChainAndUpstream();
});

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gw?.logs());
  await gw?.stop("SIGKILL");
  await env?.stop();
});

const hex = (n) => "0x" + n.toString(16);
const mine = () => rpc(env.devnet.url, "evm_mine", []);

/** A fresh journal and payTo for one scenario, and helpers to read them. */
function scenario() {
  const journal = join(mkdtempSync(join(tmpdir(), "x402-pipeline-")), "journal.db");
  const payTo = freshAddress();
  const cli = (...args) => {
    const result = runCli(["payments", "--journal", journal, ...args]);
    assert.equal(result.status, 0, result.stderr);
    return result.stdout;
  };
  return {
    journal,
    payTo,
    start: (settlement, options = {}) => startTestGateway(env, { payTo, settlement: { journal_path: journal, max_wait_ms: 100, ...settlement }, ...options }),
    summary: () => JSON.parse(cli("summary")),
    list: () => cli("list", "--limit", "0").trim().split("\n").filter(Boolean).map((line) => JSON.parse(line)),
  };
}

/** `n` paid requests, `parallel` at a time; the authorizations of those served. */
async function payMany(gateway, n, parallel = 8) {
  const accepts = unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
  const served = [];
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      const payment = await signPayment(payers[i % payers.length], accepts);
      const res = await fetch(gateway.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
      await res.arrayBuffer();
      if (res.status === 200) served.push(payment.payload.authorization);
    }
  }
  await Promise.all(Array.from({ length: parallel }, worker));
  return served;
}

/** The node's pending transactions from `sender`, by account nonce. */
async function pool(sender) {
  const content = await rpc(env.devnet.url, "txpool_content", []);
  const bySender = Object.entries(content.pending ?? {}).find(([address]) => address.toLowerCase() === sender.toLowerCase());
  return new Map(Object.values(bySender?.[1] ?? {}).map((tx) => [Number(tx.nonce), tx]));
}

/** Every authorization is used on-chain, every journaled payment settled, and payTo got each once. */
async function assertLedger(s, startBalance, served) {
  const journal = s.list();
  assert.ok(journal.every((p) => p.state === "settled"), JSON.stringify(journal.filter((p) => p.state !== "settled")));
  assert.equal(journal.length, served.length);
  for (const authorization of served) {
    assert.equal(await authorizationState(env.devnet.url, authorization.from, authorization.nonce), true);
  }
  assert.equal(await balanceOf(env.devnet.url, s.payTo), startBalance + BigInt(journal.length) * PRICE, "payTo got exactly the journaled payments, once each");
}

async function withManualMining(body) {
  await rpc(env.devnet.url, "evm_setAutomine", [false]);
  try {
    await body();
  } finally {
    await rpc(env.devnet.url, "evm_setIntervalMining", [0]).catch(() => {});
    await rpc(env.devnet.url, "evm_setAutomine", [true]).catch(() => {});
    await gw?.stop("SIGKILL");
  }
}

test("a settlement transaction stuck under the base fee is replaced at its nonce with higher fees and lands once", { timeout: 120_000 }, async () => {
  await withManualMining(async () => {
    const s = scenario();
    const startBalance = await balanceOf(env.devnet.url, s.payTo);
    gw = await s.start({ bump_after_blocks: 2 }, { admin: true });
    const served = await payMany(gw, 6);
    assert.equal(served.length, 6);
    const first = await eventually(async () => (await pool(SETTLER)).values().next().value, 30_000, "the settlement transaction in the pool");

    // The chain's base fee jumps far above what the transaction offers: it cannot be mined,
    // and would not be again for dozens of blocks.
    await rpc(env.devnet.url, "anvil_setNextBlockBaseFeePerGas", [hex(BigInt(first.maxFeePerGas) * 1000n)]);
    await mine();
    assert.equal(await rpc(env.devnet.url, "eth_getTransactionReceipt", [first.hash]), null, "stuck under the base fee");

    // A block at a time, until the settler has replaced it at the same nonce.
    const replacement = await eventually(async () => {
      const pending = (await pool(SETTLER)).get(Number(first.nonce));
      if (pending && pending.hash !== first.hash) return pending;
      await mine();
      return null;
    }, 60_000, "a replacement at the same nonce");
    assert.ok(BigInt(replacement.maxFeePerGas) * 8n >= BigInt(first.maxFeePerGas) * 9n, "max fee raised at least 12.5%");
    assert.ok(BigInt(replacement.maxPriorityFeePerGas) * 8n >= BigInt(first.maxPriorityFeePerGas) * 9n, "tip raised at least 12.5%");

    await mine();
    await eventually(() => s.summary().settled === 6, 30_000, "the six settle");
    assert.equal(await rpc(env.devnet.url, "eth_getTransactionReceipt", [first.hash]), null, "the replaced transaction never landed");
    const landed = await rpc(env.devnet.url, "eth_getTransactionReceipt", [replacement.hash]);
    assert.equal(landed?.status, "0x1");
    assert.ok(s.list().every((p) => p.transaction === replacement.hash), "the journal ends with the hash that landed");
    await assertLedger(s, startBalance, served);
    const metrics = await (await gw.admin("/metrics")).text();
    assert.match(metrics, /x402_settlement_replacements_total\{network="eip155:84532"\} [1-9]/);
  });
});

test("several transactions in flight; kill -9 with them pending and one lost by the node: all settle exactly once", { timeout: 120_000 }, async () => {
  await withManualMining(async () => {
    const s = scenario();
    const startBalance = await balanceOf(env.devnet.url, s.payTo);
    const startNonce = Number(await rpc(env.devnet.url, "eth_getTransactionCount", [SETTLER, "latest"]));
    gw = await s.start({ max_batch: 5, max_transactions_in_flight: 8 });
    const served = await payMany(gw, 30);
    assert.equal(served.length, 30);
    // Pipelined: six batches of five wait in the pool at once, at consecutive nonces.
    const pending = await eventually(async () => {
      const txs = await pool(SETTLER);
      return txs.size === 6 ? txs : null;
    }, 30_000, "six settlement transactions in flight");
    assert.deepEqual([...pending.keys()].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5].map((i) => startNonce + i));
    await gw.stop("SIGKILL");

    // The node loses one in the middle: the ones above it cannot be mined until it is back.
    await rpc(env.devnet.url, "anvil_dropTransaction", [pending.get(startNonce + 2).hash]);
    gw = await s.start({ max_batch: 5, max_transactions_in_flight: 8 });
    await rpc(env.devnet.url, "evm_setIntervalMining", [1]);
    await eventually(() => s.summary().settled === 30, 60_000, "all thirty settle");
    assert.match(gw.logs(), /re-sent a journaled settlement transaction/);
    assert.equal(Number(await rpc(env.devnet.url, "eth_getTransactionCount", [SETTLER, "latest"])), startNonce + 6, "nothing was signed twice");
    await assertLedger(s, startBalance, served);
  });
});

test("a nonce gap below the settler's transactions is filled, and what waited above it lands", { timeout: 120_000 }, async () => {
  await withManualMining(async () => {
    const s = scenario();
    const startBalance = await balanceOf(env.devnet.url, s.payTo);
    const gapNonce = Number(await rpc(env.devnet.url, "eth_getTransactionCount", [SETTLER, "latest"]));
    // Someone else with the settlement key (an operator's script) leaves a transaction in the
    // pool; the gateway signs above it; then the node drops that transaction.
    const foreign = await rpc(env.devnet.url, "eth_sendTransaction", [{ from: SETTLER, to: SETTLER, value: "0x0", nonce: hex(gapNonce) }]);
    gw = await s.start({});
    const served = await payMany(gw, 4);
    await eventually(async () => (await pool(SETTLER)).has(gapNonce + 1), 30_000, "the gateway's transaction above the foreign one");
    await rpc(env.devnet.url, "anvil_dropTransaction", [foreign]);
    await rpc(env.devnet.url, "evm_setIntervalMining", [1]);
    await eventually(() => s.summary().settled === 4, 60_000, "the four settle");
    assert.match(gw.logs(), /filled with a no-op transaction/);
    await assertLedger(s, startBalance, served);
  });
});

test("two settlement keys run two nonce lanes; each payment is settled by exactly one", { timeout: 120_000 }, async () => {
  const second = privateKeyToAccount(devPrivateKey(5)).address;
  const count = async (address) => Number(await rpc(env.devnet.url, "eth_getTransactionCount", [address, "latest"]));
  const s = scenario();
  const startBalance = await balanceOf(env.devnet.url, s.payTo);
  const before = [await count(SETTLER), await count(second)];
  await rpc(env.devnet.url, "evm_setAutomine", [false]);
  await rpc(env.devnet.url, "evm_setIntervalMining", [1]);
  try {
    gw = await s.start(
      { private_key_envs: ["X402_SETTLEMENT_KEY", "X402_SETTLEMENT_KEY_2"], max_batch: 3 },
      { gatewayEnv: { X402_SETTLEMENT_KEY_2: devPrivateKey(5) } },
    );
    const served = await payMany(gw, 24);
    assert.equal(served.length, 24);
    await eventually(() => s.summary().settled === 24, 60_000, "the 24 settle");
    const sent = [(await count(SETTLER)) - before[0], (await count(second)) - before[1]];
    assert.ok(sent[0] > 0 && sent[1] > 0, `both keys sent settlement transactions: ${sent}`);
    await assertLedger(s, startBalance, served);
  } finally {
    await rpc(env.devnet.url, "evm_setIntervalMining", [0]).catch(() => {});
    await rpc(env.devnet.url, "evm_setAutomine", [true]).catch(() => {});
  }
});

test("settlement keys are checked at start: a key listed twice, under two names, is refused", { timeout: 30_000 }, async () => {
  const s = scenario();
  await assert.rejects(
    s.start({ private_key_envs: ["X402_SETTLEMENT_KEY", "X402_SETTLEMENT_KEY_2"] }, { gatewayEnv: { X402_SETTLEMENT_KEY_2: devPrivateKey(0) } }),
    /already configured under another name/,
  );
});
