// `settle: before` under a flood, through the real binary: unfunded and pre-burnt payments are
// refused before anything is journaled, honest ones mixed in are served and settled, several
// settle at once, and beyond the bounded queue a payment gets 503 with Retry-After, uncharged.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { devPrivateKey, devAccount, rpc } from "../../deploy/devnet/devnet.mjs";
import { hits } from "../../deploy/devnet/sample-upstream.mjs";
import { startChainAndUpstream, startTestGateway, settleBeforeRoute, freshAddress, balanceOf, eventually, runCli, b64, unb64 } from "./harness.mjs";
import { signPayment, burnNonce } from "./payments.mjs";

const PATH = "/echo/premium";
const PRICE = 10_000n;
let env;

before(async () => {
  env = await startChainAndUpstream();
});

after(async () => {
  await rpc(env.devnet.url, "evm_setAutomine", [true]).catch(() => {});
  await env?.stop();
});

async function premiumGateway(settlement = {}) {
  const payTo = freshAddress();
  const journalPath = join(mkdtempSync(join(tmpdir(), "x402-flood-")), "journal.db");
  const gateway = await startTestGateway(env, {
    payTo,
    // A batch window longer than the test: only settle-before puts these on-chain.
    settlement: { journal_path: journalPath, max_wait_ms: 600_000, ...settlement },
    extraRoutes: settleBeforeRoute(PATH),
  });
  const accepts = unb64((await fetch(gateway.base + PATH)).headers.get("payment-required")).accepts[0];
  return { gateway, payTo, journalPath, accepts };
}

async function send(gateway, payment) {
  const res = await fetch(gateway.base + PATH, { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  const required = res.status === 402 ? unb64(res.headers.get("payment-required")) : null;
  const body = await res.text();
  return { status: res.status, reason: required?.error, retryAfter: res.headers.get("retry-after"), body, payer: payment.payload.authorization.from };
}

function journaled(journalPath, filter = []) {
  const out = runCli(["payments", "--journal", journalPath, "list", ...filter]);
  assert.equal(out.status, 0, out.stderr);
  return out.stdout.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line));
}

/** payTo's balance equals, to the unit, the payments the journal says are settled. */
async function assertLedger(journalPath, payTo) {
  const settled = journaled(journalPath, ["--state", "settled"]);
  const value = settled.reduce((sum, p) => sum + BigInt(p.amount), 0n);
  assert.equal(await balanceOf(env.devnet.url, payTo), value, `settled in the journal: ${settled.length}`);
  return settled.length;
}

/** Settlement transactions waiting in the (non-mining) pool. */
async function settlementsInPool() {
  const pool = await rpc(env.devnet.url, "txpool_content");
  const settler = devAccount(0).address.toLowerCase();
  const mine = Object.entries(pool.pending ?? {}).find(([from]) => from.toLowerCase() === settler);
  return mine ? Object.keys(mine[1]).length : 0;
}

test("a flood of unfunded and pre-burnt payments is refused before journaling; honest ones mixed in are served and settled", async () => {
  const { gateway, payTo, journalPath, accepts } = await premiumGateway();
  try {
    const unfunded = await Promise.all(Array.from({ length: 40 }, () => signPayment("0x" + randomBytes(32).toString("hex"), accepts)));
    const burnt = await Promise.all(Array.from({ length: 10 }, () => signPayment(devPrivateKey(6), accepts)));
    for (const payment of burnt) await burnNonce(env.devnet.url, devAccount(6), payment.payload.authorization.nonce);
    const honest = await Promise.all([2, 3, 4, 5, 2, 3].map((i) => signPayment(devPrivateKey(i), accepts)));
    const hitsBefore = hits.get(PATH) ?? 0;

    // Honest payments interleaved with the bad ones, all at once.
    const flood = [...unfunded, ...burnt];
    const all = flood.flatMap((payment, i) => (i % 8 === 0 && honest.length ? [honest.pop(), payment] : [payment]));
    all.push(...honest.splice(0));
    const answers = await Promise.all(all.map((payment) => send(gateway, payment)));

    const honestPayers = new Set([2, 3, 4, 5].map((i) => devAccount(i).address));
    const served = answers.filter((a) => honestPayers.has(a.payer));
    assert.equal(served.length, 6);
    assert.ok(served.every((a) => a.status === 200), JSON.stringify(served.filter((a) => a.status !== 200)));
    assert.equal((hits.get(PATH) ?? 0) - hitsBefore, 6, "only the honest ones reached the upstream");

    const unfundedAnswers = answers.filter((a) => unfunded.some((p) => p.payload.authorization.from === a.payer));
    assert.equal(unfundedAnswers.length, 40);
    assert.ok(unfundedAnswers.every((a) => a.status === 402 && a.reason === "invalid_exact_evm_insufficient_balance"), JSON.stringify(unfundedAnswers[0]));
    const burntAnswers = answers.filter((a) => a.payer === devAccount(6).address);
    assert.equal(burntAnswers.length, 10);
    assert.ok(burntAnswers.every((a) => a.status === 402 && a.reason === "invalid_exact_evm_nonce_already_used"), JSON.stringify(burntAnswers[0]));

    // Nothing of the flood is in the journal: only the six honest payments, all settled.
    const rows = journaled(journalPath);
    assert.equal(rows.length, 6, JSON.stringify(rows.map((r) => [r.payer, r.state])));
    assert.ok(rows.every((r) => honestPayers.has(r.payer) && r.state === "settled"));
    assert.equal(await assertLedger(journalPath, payTo), 6);
    assert.equal(await balanceOf(env.devnet.url, payTo), 6n * PRICE);
  } finally {
    if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway.logs());
    await gateway.stop();
  }
});

test("several settle-before payments settle at once, none waiting for another's receipt", async () => {
  const { gateway, payTo, journalPath, accepts } = await premiumGateway();
  try {
    const payments = await Promise.all([2, 3, 4, 5, 6].map((i) => signPayment(devPrivateKey(i), accepts)));
    await rpc(env.devnet.url, "evm_setAutomine", [false]);
    const answers = Promise.all(payments.map((payment) => send(gateway, payment)));
    // One at a time, a second transaction would wait for the first one's receipt, which
    // cannot come while nothing is mined.
    await eventually(async () => (await settlementsInPool()) === 5, 20_000, "five settlement transactions in flight at once");
    await rpc(env.devnet.url, "evm_setAutomine", [true]);
    await rpc(env.devnet.url, "anvil_mine", ["0x1"]);
    const final = await answers;
    assert.ok(final.every((a) => a.status === 200), JSON.stringify(final.filter((a) => a.status !== 200)));
    assert.equal(await assertLedger(journalPath, payTo), 5);
  } finally {
    if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway.logs());
    await rpc(env.devnet.url, "evm_setAutomine", [true]);
    await gateway.stop();
  }
});

test("beyond the settle-before queue a payment gets 503 with Retry-After before anything is journaled", async () => {
  // Room for one waiting payment: 24 at once are more than the settler's parallel slots
  // (16) and the queue (1) hold while nothing is mined, so some must overflow.
  const { gateway, payTo, journalPath, accepts } = await premiumGateway({ settle_before_queue: 1 });
  try {
    const payments = await Promise.all(Array.from({ length: 24 }, () => signPayment(devPrivateKey(7), accepts)));
    await rpc(env.devnet.url, "evm_setAutomine", [false]);
    const answered = [];
    const answers = payments.map((payment) => send(gateway, payment).then((answer) => answered.push(answer) && answer));
    const overflow = await eventually(() => answered.length >= 7 && answered, 20_000, "503s beyond the queue");
    assert.ok(overflow.every((a) => a.status === 503), "nothing is answered but the overflow before a block is mined");
    assert.ok(overflow.every((a) => a.retryAfter && /at capacity/.test(a.body)), JSON.stringify(overflow[0]));
    await rpc(env.devnet.url, "evm_setAutomine", [true]);
    await rpc(env.devnet.url, "anvil_mine", ["0x1"]);
    const final = await Promise.all(answers);
    const ok = final.filter((a) => a.status === 200).length;
    const unavailable = final.filter((a) => a.status === 503).length;
    assert.equal(ok + unavailable, 24, JSON.stringify(final.filter((a) => a.status !== 200 && a.status !== 503)));
    assert.ok(ok >= 1 && unavailable >= 7, `ok ${ok}, 503 ${unavailable}`);
    // Only the served ones are journaled, all settled: a 503 charged nobody.
    const rows = journaled(journalPath);
    assert.equal(rows.length, ok);
    assert.ok(rows.every((r) => r.state === "settled"));
    assert.equal(await assertLedger(journalPath, payTo), ok);
    // A refused payment may be sent again as it is.
    const retried = await send(gateway, payments[final.findIndex((a) => a.status === 503)]);
    assert.equal(retried.status, 200, retried.body);
    assert.equal(await assertLedger(journalPath, payTo), ok + 1);
  } finally {
    if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway.logs());
    await rpc(env.devnet.url, "evm_setAutomine", [true]);
    await gateway.stop();
  }
});
