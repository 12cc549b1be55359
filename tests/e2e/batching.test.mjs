// Batches and the per-transaction gas cap, through the real binary: payments that would
// not fit one transaction under `max_gas_per_transaction` are split across several, each
// under the cap, and all of them settle.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { devPrivateKey, rpc } from "../../deploy/devnet/devnet.mjs";
import { startChainAndUpstream, startTestGateway, freshAddress, balanceOf, eventually, runCli, b64, unb64 } from "./harness.mjs";
import { signPayment } from "./payments.mjs";

let env;
let gateway;
const payTo = freshAddress();
const journalPath = join(mkdtempSync(join(tmpdir(), "x402-batching-")), "journal.db");
const GAS_CAP = 300_000;

before(async () => {
  env = await startChainAndUpstream();
  gateway = await startTestGateway(env, {
    payTo,
    settlement: { journal_path: journalPath, max_wait_ms: 1500, max_gas_per_transaction: GAS_CAP },
  });
});

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway?.logs());
  await gateway?.stop();
  await env?.stop();
});

test("a batch above the gas cap is split into transactions under it, and every payment settles", async () => {
  const accepts = unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
  const responses = await Promise.all(Array.from({ length: 12 }, async (_, i) => {
    const payment = await signPayment(devPrivateKey(5 + (i % 3)), accepts);
    const res = await fetch(gateway.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
    await res.arrayBuffer();
    return res.status;
  }));
  assert.deepEqual(responses, Array(12).fill(200));
  await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === 12_000n, 30_000, "all 12 settled");
  const settled = () => runCli(["payments", "--journal", journalPath, "list", "--state", "settled", "--limit", "0"])
    .stdout.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line));
  // The journal follows the chain within a settler round.
  const rows = await eventually(() => { const r = settled(); return r.length === 12 && r; }, 30_000, "all 12 journaled settled");
  const transactions = [...new Set(rows.map((r) => r.transaction))];
  assert.ok(transactions.length > 1, `split into ${transactions.length} transactions`);
  for (const hash of transactions) {
    const receipt = await rpc(env.devnet.url, "eth_getTransactionReceipt", [hash]);
    assert.ok(Number(receipt.gasUsed) <= GAS_CAP, `gas used ${Number(receipt.gasUsed)} is under the cap`);
  }
  // Batches are sized from a first guess of gas per payment, then from each estimate; one
  // estimated above the cap is shrunk before it is signed. Either way none is over it.
});

test("above max_fee_per_gas_gwei the settler waits; the payments keep in the journal and settle once the cap allows", async () => {
  const payToCapped = freshAddress();
  const capped = join(mkdtempSync(join(tmpdir(), "x402-gascap-")), "journal.db");
  const settlement = { journal_path: capped, max_wait_ms: 100, drain_timeout_seconds: 2 };
  let gw = await startTestGateway(env, { payTo: payToCapped, settlement: { ...settlement, max_fee_per_gas_gwei: 0 } });
  const accepts = unb64((await fetch(gw.base + "/weather")).headers.get("payment-required")).accepts[0];
  for (let i = 0; i < 3; i++) {
    const res = await fetch(gw.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(await signPayment(devPrivateKey(8), accepts)) } });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
  }
  await eventually(() => /above the configured cap/.test(gw.logs()), 10_000, "the settler refuses the fee");
  assert.equal((await gw.stop()).code, 0, gw.logs());
  assert.equal(await balanceOf(env.devnet.url, payToCapped), 0n, "nothing was sent above the cap");
  assert.deepEqual(JSON.parse(runCli(["payments", "--journal", capped, "summary"]).stdout), { accepted: 3 });

  gw = await startTestGateway(env, { payTo: payToCapped, settlement });
  try {
    await eventually(async () => (await balanceOf(env.devnet.url, payToCapped)) === 3000n, 20_000, "settled without the cap");
  } finally {
    await gw.stop();
  }
});
