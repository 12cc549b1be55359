// Journal upkeep through the real binary: with a retention of seconds, settled payments whose
// validBefore + retention has passed are pruned from the journal (and their receipts with
// them), payments still inside retention keep their receipts, a pruned payment cannot be
// replayed for another response, and `payments export` taken before pruning has every
// settled payment, matching payTo's on-chain balance.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { devPrivateKey } from "../../deploy/devnet/devnet.mjs";
import { payingFetch } from "../../deploy/devnet/pay.mjs";
import { startChainAndUpstream, startTestGateway, freshAddress, balanceOf, eventually, runCli, b64, unb64 } from "./harness.mjs";
import { signPayment } from "./payments.mjs";

let env;
let gateway;
const payTo = freshAddress();
const journalPath = join(mkdtempSync(join(tmpdir(), "x402-upkeep-")), "journal.db");
const RETENTION_SECONDS = 3;
// Short-lived payments: valid this long, a little above the settle margin so they are accepted.
const SHORT_VALIDITY_SECONDS = 15;

before(async () => {
  env = await startChainAndUpstream();
  gateway = await startTestGateway(env, {
    payTo,
    settlement: { journal_path: journalPath, journal_retention_days: RETENTION_SECONDS / 86_400 },
    payments: { settle_margin_seconds: 5 },
  });
});

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway?.logs());
  await gateway?.stop();
  await env?.stop();
});

function cli(...args) {
  const run = runCli(["payments", "--journal", journalPath, ...args]);
  assert.equal(run.status, 0, run.stderr);
  return run.stdout;
}

const jsonLines = (text) => text.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line));

async function pay(payment) {
  const res = await fetch(gateway.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  await res.arrayBuffer();
  return res;
}

const receiptOf = (res) => unb64(res.headers.get("payment-response")).extensions["x402-gateway"].paymentId;

test("pruning drops settled payments past retention, keeps receipts inside it, and the export taken before has every settled payment", async () => {
  const accepts = unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
  const now = Math.floor(Date.now() / 1000);
  const shortPayments = await Promise.all([0, 1, 2].map((i) =>
    signPayment(devPrivateKey(3 + i), accepts, { authorization: { validBefore: String(now + SHORT_VALIDITY_SECONDS) } })));
  const shortReceipts = [];
  for (const payment of shortPayments) {
    const res = await pay(payment);
    assert.equal(res.status, 200);
    shortReceipts.push(receiptOf(res));
  }
  // Inside retention for minutes: the official client signs validBefore = now + maxTimeoutSeconds (300).
  const longReceipts = [];
  for (const key of [devPrivateKey(6), devPrivateKey(7)]) {
    const res = await payingFetch(key)(gateway.base + "/weather");
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    longReceipts.push(receiptOf(res));
  }
  const paid = [...shortReceipts, ...longReceipts];
  await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === 5000n, 30_000, "all five settled on-chain");

  // The audit trail, before anything is pruned: every settled payment, in both formats.
  const exported = await eventually(() => {
    const rows = jsonLines(cli("export"));
    return rows.length === paid.length && rows.every((r) => r.state === "settled") && rows;
  }, 10_000, "every payment exported as settled");
  assert.deepEqual(exported.map((r) => r.id).sort(), [...paid].sort(), "the export has exactly the payments made");
  assert.equal(exported.reduce((sum, r) => sum + BigInt(r.amount), 0n), await balanceOf(env.devnet.url, payTo), "exported amounts = payTo's increase");
  for (const row of exported) {
    assert.match(row.transaction, /^0x[0-9a-f]{64}$/);
    assert.equal(row.payTo.toLowerCase(), payTo.toLowerCase());
  }
  const csv = cli("export", "--format", "csv").trim().split("\n");
  assert.equal(csv[0].split(",")[0], "id");
  assert.equal(csv.length, 1 + paid.length, "a header row and one row per settled payment");
  assert.deepEqual(jsonLines(cli("export", "--state", "failed")), [], "nothing failed");

  // Pruned once validBefore + retention has passed: receipt and journal rows gone.
  for (const id of shortReceipts) {
    await eventually(async () => (await fetch(`${gateway.base}/.well-known/x402/receipts/${id}`)).status === 404, 40_000, `receipt ${id} pruned`);
  }
  const listed = jsonLines(cli("list", "--limit", "0")).map((r) => r.id);
  assert.deepEqual(listed.sort(), [...longReceipts].sort(), "only the payments inside retention are left");
  assert.deepEqual(JSON.parse(cli("summary")), { settled: longReceipts.length });
  for (const id of longReceipts) {
    const res = await fetch(`${gateway.base}/.well-known/x402/receipts/${id}`);
    assert.equal(res.status, 200, "a receipt inside retention is still served");
    assert.equal((await res.json()).state, "settled");
  }
  assert.match(gateway.logs(), /journal pruned/);

  // The attacker's move: a pruned payment, sent again, buys nothing (its validBefore has passed).
  const replay = await pay(shortPayments[0]);
  assert.equal(replay.status, 402);
  assert.equal(await balanceOf(env.devnet.url, payTo), 5000n);
  assert.equal(jsonLines(cli("export", "--state", "all")).length, longReceipts.length);
});

test("export --since takes only what changed since then; a bad time is refused", async () => {
  assert.deepEqual(jsonLines(cli("export", "--since", String(Math.floor(Date.now() / 1000) + 3600))), []);
  assert.equal(jsonLines(cli("export", "--since", "1970-01-01T00:00:00Z")).length, 2);
  const bad = runCli(["payments", "--journal", journalPath, "export", "--since", "yesterday"]);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /RFC 3339/);
});
