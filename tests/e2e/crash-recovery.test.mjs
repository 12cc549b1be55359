// Money safety through crashes: the real binary is killed with SIGKILL before a batch is
// submitted, between broadcast and receipt (with the transaction still in the mempool, and
// with the mempool lost), and in the middle of traffic. After each restart every payment
// the gateway journaled is settled on-chain exactly once, and none is lost or replayed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { devPrivateKey, rpc } from "../../deploy/devnet/devnet.mjs";
import {
  startChainAndUpstream, startTestGateway, freshAddress, balanceOf, authorizationState, eventually, runCli, b64, unb64,
} from "./harness.mjs";
import { signPayment } from "./payments.mjs";

const PRICE = 1000n;
let env;
const journalPath = join(mkdtempSync(join(tmpdir(), "x402-crash-")), "journal.db");
const payTo = freshAddress();
const payers = [6, 7, 8, 9].map(devPrivateKey);
let accepts;
let gw;
/** Every response that came back 200 with a receipt: receipt id → authorization. */
const served = new Map();

before(async () => {
  env = await startChainAndUpstream();
});

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gw?.logs());
  await gw?.stop("SIGKILL");
  await rpc(env.devnet.url, "evm_setAutomine", [true]).catch(() => {});
  await env?.stop();
});

// A batch window longer than the test: payments are accepted and never sent. Admission by
// settlement capacity would rightly refuse them (nothing queued could settle before its
// validBefore), so it is off while the test builds that backlog on purpose.
const NEVER_SENT = { max_wait_ms: 600_000, max_batch: 1000, admission: false };

function gateway(settlement) {
  return startTestGateway(env, { payTo, settlement: { journal_path: journalPath, receipt_timeout_seconds: 60, ...settlement } });
}

/** Sends `n` distinct paid requests, `parallel` at a time; returns how many were served. */
async function payMany(gw, n, parallel = 10) {
  if (!accepts) accepts = unb64((await fetch(gw.base + "/weather")).headers.get("payment-required")).accepts[0];
  let servedNow = 0;
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      const payment = await signPayment(payers[i % payers.length], accepts);
      let res;
      try {
        res = await fetch(gw.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
      } catch {
        continue; // the gateway died under us: not served
      }
      if (res.status !== 200) continue;
      await res.arrayBuffer();
      const receipt = unb64(res.headers.get("payment-response"));
      served.set(receipt.extensions["x402-gateway"].paymentId, { payment, authorization: payment.payload.authorization });
      servedNow++;
    }
  }
  await Promise.all(Array.from({ length: parallel }, worker));
  return servedNow;
}

function journalSummary() {
  const result = runCli(["payments", "--journal", journalPath, "summary"]);
  assert.equal(result.status, 0, result.stderr);
  return JSON.parse(result.stdout);
}

function journalList() {
  const result = runCli(["payments", "--journal", journalPath, "list", "--limit", "0"]);
  assert.equal(result.status, 0, result.stderr);
  return result.stdout.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line));
}

test("kill -9 before submit, between broadcast and receipt, and mid-traffic: every accepted payment settles exactly once", { timeout: 240_000 }, async () => {
  const startBalance = await balanceOf(env.devnet.url, payTo);

  // 1. Accepted, never submitted: a batch window longer than the test, then SIGKILL.
  gw = await gateway(NEVER_SENT);
  assert.equal(await payMany(gw, 80), 80);
  assert.deepEqual(journalSummary(), { accepted: 80 }, "the CLI reads the live journal");
  await gw.stop("SIGKILL");
  assert.equal(await balanceOf(env.devnet.url, payTo), startBalance, "nothing reached the chain");

  // A payment accepted before the crash is still a replay after it.
  const [oldReceipt, old] = served.entries().next().value;
  gw = await gateway(NEVER_SENT);
  const replay = await fetch(gw.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(old.payment) } });
  assert.equal(replay.status, 402);
  assert.equal(unb64(replay.headers.get("payment-required")).error, "invalid_exact_evm_nonce_already_used");
  const lookup = await fetch(`${gw.base}/.well-known/x402/receipts/${oldReceipt}`);
  assert.equal(lookup.status, 200);
  assert.equal((await lookup.json()).state, "accepted");
  await gw.stop("SIGKILL");

  // 2. Broadcast, not mined: the chain stops mining, the restarted gateway signs and
  // journals a batch for what it holds, keeps serving while it waits for the receipt,
  // sends the next payments in a second transaction at the next nonce, and dies before
  // any receipt.
  await rpc(env.devnet.url, "evm_setAutomine", [false]);
  gw = await gateway({ max_wait_ms: 100 });
  await eventually(() => journalSummary().submitted === 80, 30_000, "the 80 submitted in a journaled batch");
  assert.equal(await payMany(gw, 60), 60);
  await eventually(() => journalSummary().submitted === 140, 30_000, "the 60 submitted too, while the first batch is pending");
  await gw.stop("SIGKILL");
  assert.equal(await balanceOf(env.devnet.url, payTo), startBalance, "the batches are still in the mempool");

  // 2a. The restarted gateway finds its transactions pending and waits for them: mining
  // resumes and they land once; nothing is signed again.
  gw = await gateway({ max_wait_ms: 100 });
  await rpc(env.devnet.url, "evm_setAutomine", [true]);
  await rpc(env.devnet.url, "evm_mine", []);
  await eventually(() => journalSummary().settled === 140, 60_000, "the pending batches settle");
  assert.equal(await balanceOf(env.devnet.url, payTo), startBalance + 140n * PRICE);

  // 3. Broadcast and lost: the mempool forgets the transactions before they are mined.
  await rpc(env.devnet.url, "evm_setAutomine", [false]);
  assert.equal(await payMany(gw, 40), 40);
  // The settler sends what has arrived and then waits on that receipt: some are in the
  // unmined batch, the rest still accepted.
  await eventually(() => {
    const s = journalSummary();
    return s.submitted > 0 && s.submitted + (s.accepted ?? 0) === 40;
  }, 30_000, "a batch of the new payments submitted");
  await gw.stop("SIGKILL");
  await rpc(env.devnet.url, "anvil_dropAllTransactions", []);
  await rpc(env.devnet.url, "evm_setAutomine", [true]);
  gw = await gateway({ max_wait_ms: 100 });
  await eventually(() => journalSummary().settled === 180, 60_000, "the journaled bytes are sent again and land");
  assert.match(gw.logs(), /re-sent a journaled settlement transaction/);

  // 4. Killed in the middle of traffic, twice.
  for (let round = 0; round < 2; round++) {
    const traffic = payMany(gw, 60, 8);
    await new Promise((r) => setTimeout(r, 150 + round * 200));
    await gw.stop("SIGKILL");
    await traffic;
    gw = await gateway({ max_wait_ms: 100 });
  }
  await payMany(gw, 20);
  const { code } = await gw.stop("SIGTERM");
  assert.equal(code, 0, gw.logs());

  // Whatever the crashes cut, the journal and the chain agree exactly.
  const journal = journalList();
  assert.ok(journal.length >= served.size, "every served payment is journaled");
  assert.ok(journal.every((p) => p.state === "settled"), JSON.stringify(journal.filter((p) => p.state !== "settled")));
  const byId = new Map(journal.map((p) => [p.id, p]));
  for (const [id, { authorization }] of served) {
    assert.equal(byId.get(id)?.state, "settled", `served payment ${id} is settled`);
    assert.equal(await authorizationState(env.devnet.url, authorization.from, authorization.nonce), true);
  }
  const journaled = BigInt(journal.length) * PRICE;
  assert.equal(await balanceOf(env.devnet.url, payTo), startBalance + journaled, "payTo got exactly the journaled payments, once each");
  assert.ok(served.size >= 200, `served ${served.size}`);
});

test("journal_sync: normal: payments served before kill -9 are still journaled and settle once", { timeout: 120_000 }, async () => {
  const normalJournal = join(mkdtempSync(join(tmpdir(), "x402-crash-normal-")), "journal.db");
  const start = (settlement) =>
    startTestGateway(env, { payTo, settlement: { journal_path: normalJournal, journal_sync: "normal", ...settlement } });
  const summary = () => {
    const result = runCli(["payments", "--journal", normalJournal, "summary"]);
    assert.equal(result.status, 0, result.stderr);
    return JSON.parse(result.stdout);
  };
  const startBalance = await balanceOf(env.devnet.url, payTo);
  const before = new Set(served.keys());
  gw = await start(NEVER_SENT);
  assert.equal(await payMany(gw, 40), 40);
  await gw.stop("SIGKILL");
  assert.deepEqual(summary(), { accepted: 40 }, "no fsync per commit, yet the kernel kept every commit through the kill");

  gw = await start({ max_wait_ms: 100 });
  const [, first] = [...served.entries()].find(([id]) => !before.has(id));
  const replay = await fetch(gw.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(first.payment) } });
  assert.equal(replay.status, 402, "still a replay after the restart");
  await replay.arrayBuffer();
  await eventually(() => summary().settled === 40, 60_000, "the 40 settle");
  assert.equal(await balanceOf(env.devnet.url, payTo), startBalance + 40n * PRICE);
});
