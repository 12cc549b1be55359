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
    settlement: { journal_path: journalPath, max_batch: 2, max_wait_ms: 500, stall_after_seconds: 600, ...(process.env.X402_TEST_ADMISSION === "off" ? { admission: false } : {}) },
    payments: { max_timeout_seconds: 60, settle_margin_seconds: 20 },
  });
});

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway?.logs());
  await gateway?.stop();
  await env?.stop();
});

/** One paid request from payer `i`: its status, the body's error code and Retry-After. */
async function paidRequest(accepts, i) {
  const payment = await signPayment(PAYERS[i % PAYERS.length], accepts);
  const res = await fetch(gateway.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  const text = await res.text();
  let error;
  try {
    error = JSON.parse(text).error;
  } catch {
    error = undefined;
  }
  return { status: res.status, error, retryAfter: res.headers.get("retry-after") };
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
  const summary = JSON.parse(runCli(["payments", "--journal", journalPath, "summary"]).stdout);
  assert.deepEqual(summary, { settled: accepted }, "every accepted payment settled, none failed or expired");
  assert.equal(await balanceOf(env.devnet.url, payTo), BigInt(accepted) * PRICE_ATOMIC, "payTo received every accepted payment");
});
