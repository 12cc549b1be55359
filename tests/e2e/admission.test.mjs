// Admission by settlement capacity, through the real binary on a chain that mines every 2 s
// with a settler made slow on purpose (2 payments per transaction): paid load above what it
// can settle gets 503 `settlement_backlog` with Retry-After, free routes keep answering, and
// every payment that was accepted settles before its validBefore, none expires unsettled.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { devPrivateKey, rpc } from "../../deploy/devnet/devnet.mjs";
import { startChainAndUpstream, startTestGateway, freshAddress, balanceOf, eventually, runCli, sleep, b64, unb64 } from "./harness.mjs";
import { signPayment } from "./payments.mjs";

const PRICE_ATOMIC = 1000n;
const OFFERED_PER_SECOND = 10;
const LOAD_SECONDS = 20;
const PAYERS = [5, 6, 7, 8, 9].map(devPrivateKey);

let env;
let gateway;
const payTo = freshAddress();
const journalPath = join(mkdtempSync(join(tmpdir(), "x402-admission-")), "journal.db");

before(async () => {
  env = await startChainAndUpstream();
  await rpc(env.devnet.url, "evm_setIntervalMining", [2]);
  gateway = await startTestGateway(env, {
    payTo,
    admin: true,
    // The stall guard is kept out of the way: what refuses here must be admission.
    // One transaction in flight of 2 payments per 2 s block: at most 1 payment/s settles.
    settlement: {
      journal_path: journalPath, max_batch: 2, max_transactions_in_flight: 1, max_wait_ms: 500, stall_after_seconds: 600,
      ...(process.env.X402_TEST_ADMISSION === "off" ? { admission: false } : {}),
    },
    payments: { max_timeout_seconds: 60, settle_margin_seconds: 20 },
  });
});

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway?.logs());
  await gateway?.stop();
  await env?.stop();
});

/** One paid request from payer `i`: its status, the body's error code and message, Retry-After. */
async function paidRequest(accepts, i, payment = undefined) {
  payment ??= await signPayment(PAYERS[i % PAYERS.length], accepts);
  const res = await fetch(gateway.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  const text = await res.text();
  let body = {};
  try {
    body = JSON.parse(text);
  } catch {
    body = {};
  }
  return { status: res.status, error: body.error, message: body.message, retryAfter: res.headers.get("retry-after") };
}

/** The journal's count of payments per state. */
function journalSummary() {
  const out = runCli(["payments", "--journal", journalPath, "summary"]);
  assert.equal(out.status, 0, out.stderr);
  return JSON.parse(out.stdout);
}

test("paid load above settlement capacity gets 503 settlement_backlog, free routes stay open, and no accepted payment expires", async () => {
  const accepts = unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
  const paid = [];
  const free = [];
  let readyWhileRefusing;
  for (let tick = 0; tick < OFFERED_PER_SECOND * LOAD_SECONDS; tick++) {
    paid.push(paidRequest(accepts, tick));
    if (tick % 5 === 0) {
      free.push(fetch(gateway.base + "/health").then(async (res) => (await res.arrayBuffer(), res.status)).catch(() => 0));
    }
    if (tick % 10 === 0 && readyWhileRefusing === undefined) {
      const settlement = await (await gateway.admin("/settlement")).json();
      if (Object.values(settlement.admission ?? {}).some((n) => n.refusing)) {
        readyWhileRefusing = (await gateway.admin("/ready")).status;
      }
    }
    await sleep(1000 / OFFERED_PER_SECOND);
  }
  const answers = await Promise.all(paid);
  const accepted = answers.filter((a) => a.status === 200).length;
  const backlogRefusals = answers.filter((a) => a.status === 503 && a.error === "settlement_backlog");
  const other = answers.filter((a) => a.status !== 200 && !(a.status === 503 && a.error === "settlement_backlog"));
  assert.deepEqual(other, [], "every paid request was served or refused for the backlog");
  assert.ok(accepted > 0, "some paid requests were served");
  assert.ok(backlogRefusals.length > 0, `offered ${answers.length} paid requests, none refused for the backlog`);
  for (const refusal of backlogRefusals) {
    assert.ok(Number(refusal.retryAfter) >= 1, `Retry-After ${refusal.retryAfter}`);
  }
  assert.deepEqual([...new Set(await Promise.all(free))], [200], "free routes answered 200 throughout");
  assert.equal(readyWhileRefusing, 200, "a backlog is load, not a failure: /ready stays 200");

  const metrics = await (await gateway.admin("/metrics")).text();
  assert.match(metrics, /x402_settlement_backlog\{network="eip155:84532"\} \d+/);
  assert.match(metrics, /x402_settlement_capacity_per_second\{network="eip155:84532"\} [\d.]+/);
  assert.match(metrics, /x402_settlement_backlog_seconds\{network="eip155:84532"\}/);
  assert.match(metrics, /x402_payments_rejected_total\{[^}]*reason="settlement_backlog"[^}]*\} [1-9]/);

  // After the load stops, everything accepted settles: nothing expires or fails.
  await eventually(async () => (await (await gateway.admin("/settlement")).json()).unsettled === 0, 60_000, "the backlog drains");
  assert.deepEqual(journalSummary(), { settled: accepted }, "every accepted payment settled, none failed or expired");
  assert.equal(await balanceOf(env.devnet.url, payTo), BigInt(accepted) * PRICE_ATOMIC, "payTo received every accepted payment");
});

test("payments signed to end soon are refused when the backlog ahead of them would outlast them, and none that is accepted expires", async () => {
  await eventually(async () => (await (await gateway.admin("/settlement")).json()).unsettled === 0, 60_000, "an empty backlog to start from");
  const accepts = unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
  const settledBefore = journalSummary().settled ?? 0;
  const balanceBefore = await balanceOf(env.devnet.url, payTo);
  // Signed as a client that signs ahead would: 30 s of validity (the least the route takes
  // is the 20 s settle margin), sent all at once. At 1 payment/s the settler reaches only
  // the first twenty-odd before they end; before, all were taken and the rest expired.
  const validBefore = String(Math.floor(Date.now() / 1000) + 30);
  const payments = await Promise.all(
    Array.from({ length: 45 }, (_, i) => signPayment(PAYERS[i % PAYERS.length], accepts, { authorization: { validBefore } })),
  );
  const answers = [];
  for (const [i, payment] of payments.entries()) answers.push(await paidRequest(accepts, i, payment));
  const accepted = answers.filter((a) => a.status === 200).length;
  const late = answers.filter((a) => a.status === 503 && a.error === "settlement_backlog");
  assert.deepEqual(answers.filter((a) => a.status !== 200 && !(a.status === 503 && a.error === "settlement_backlog")), [], "served or refused for the backlog");
  assert.ok(accepted > 0, "the first payments fit");
  assert.ok(late.length > 0, `all ${accepted} payments ending in 30 s were taken at 1 payment/s`);
  assert.match(late[0].message, /sign one valid for longer/);
  assert.ok(Number(late[0].retryAfter) >= 1);

  await eventually(async () => (await (await gateway.admin("/settlement")).json()).unsettled === 0, 60_000, "the backlog drains");
  const summary = journalSummary();
  assert.deepEqual(summary, { settled: settledBefore + accepted }, "every accepted payment settled before its validBefore, none expired");
  assert.equal(await balanceOf(env.devnet.url, payTo) - balanceBefore, BigInt(accepted) * PRICE_ATOMIC, "payTo received every accepted payment");
});
