// A burnt nonce is not a payment. The attack: the payer signs a second EIP-3009
// authorization with the same nonce (to itself, value 0) and puts it on-chain itself, before
// paying the gateway or while the gateway's settlement is on its way. The token then refuses
// the gateway's transfer ("authorization is used") and emits AuthorizationUsed for the nonce
// from the payer's own transaction. Whatever the timing and the route's settle mode, payTo
// receives the price or the payer is refused and blocked; the journal never says "settled"
// for a payment payTo did not receive (the ledger check closes every test).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { devPrivateKey, devAccount, rpc } from "../../deploy/devnet/devnet.mjs";
import { hits } from "../../deploy/devnet/sample-upstream.mjs";
import { startChainAndUpstream, startTestGateway, settleBeforeRoute, freshAddress, balanceOf, authorizationState, eventually, runCli, b64, unb64 } from "./harness.mjs";
import { signPayment, burnNonce, cancelAuthorization } from "./payments.mjs";

let env;
let gateway;
const payTo = freshAddress();
const journalPath = join(mkdtempSync(join(tmpdir(), "x402-burnt-nonce-")), "journal.db");
const BATCHED = "/weather";
const BEFORE = "/echo/premium";

before(async () => {
  env = await startChainAndUpstream();
  gateway = await startTestGateway(env, {
    payTo,
    settlement: { journal_path: journalPath, max_wait_ms: 200 },
    extraRoutes: settleBeforeRoute(BEFORE),
  });
});

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway?.logs());
  await rpc(env.devnet.url, "evm_setAutomine", [true]).catch(() => {});
  await gateway?.stop();
  await env?.stop();
});

async function offer(path) {
  return unb64((await fetch(gateway.base + path)).headers.get("payment-required")).accepts[0];
}

/** Sends `payment` to `path`; the status, the refusal's reason code and the receipt path. */
async function send(path, payment) {
  const res = await fetch(gateway.base + path, { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  const required = res.status === 402 ? unb64(res.headers.get("payment-required")) : null;
  const settlement = res.headers.get("payment-response");
  const body = await res.text();
  return {
    status: res.status,
    reason: required?.error,
    body,
    receipt: settlement ? unb64(settlement).extensions["x402-gateway"].receipt : null,
  };
}

/** The settler's transaction waiting in the (non-mining) pool, once it is there. */
async function settlementInPool() {
  return eventually(async () => {
    const pool = await rpc(env.devnet.url, "txpool_content");
    const fromSettler = Object.entries(pool.pending ?? {}).find(([from]) => from.toLowerCase() === devAccount(0).address.toLowerCase());
    return fromSettler && Object.values(fromSettler[1])[0]?.hash;
  }, 15_000, "the settlement transaction in the pool");
}

/**
 * Front-runs the gateway's settlement transaction: takes it out of the pool, mines the
 * payer's move on `nonce` first (`burnNonce` unless told otherwise), then puts the gateway's
 * exact bytes back and mines them. Returns both receipts, so the test can show the order
 * really was the payer's move first.
 */
async function frontRunSettlement(payerIndex, nonce, move = burnNonce) {
  const settlement = await settlementInPool();
  const raw = await rpc(env.devnet.url, "eth_getRawTransactionByHash", [settlement]);
  await rpc(env.devnet.url, "anvil_dropTransaction", [settlement]);
  const burn = await move(env.devnet.url, devAccount(payerIndex), nonce);
  await rpc(env.devnet.url, "anvil_mine", ["0x1"]);
  await rpc(env.devnet.url, "eth_sendRawTransaction", [raw]);
  await rpc(env.devnet.url, "anvil_mine", ["0x1"]);
  await rpc(env.devnet.url, "evm_setAutomine", [true]);
  const burnt = await rpc(env.devnet.url, "eth_getTransactionReceipt", [burn]);
  const settled = await rpc(env.devnet.url, "eth_getTransactionReceipt", [settlement]);
  return { burnt, settled };
}

/**
 * A batched route serves `payerIndex`'s payment, then the payer's `move` on its nonce lands
 * before the gateway's settlement transaction (checked, so the test cannot pass by accident).
 */
async function servedThenFrontRun(payerIndex, move) {
  await rpc(env.devnet.url, "evm_setAutomine", [false]);
  const payment = await signPayment(devPrivateKey(payerIndex), await offer(BATCHED));
  const res = await send(BATCHED, payment);
  assert.equal(res.status, 200, "a batched route serves before it settles");
  const { burnt, settled } = await frontRunSettlement(payerIndex, payment.payload.authorization.nonce, move);
  assert.ok(BigInt(burnt.blockNumber) < BigInt(settled.blockNumber), "the payer's move landed before the settlement");
  return { res, burnt };
}

function journaled(payer) {
  const out = runCli(["payments", "--journal", journalPath, "list", "--payer", payer]);
  assert.equal(out.status, 0, out.stderr);
  return out.stdout.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line));
}

/** The journal's final word on a receipt, once the settler has one. */
async function finalState(receiptPath) {
  return eventually(async () => {
    const lookup = await (await fetch(gateway.base + receiptPath)).json();
    return (lookup.state === "settled" || lookup.state === "failed") && lookup;
  }, 30_000, `a final state for ${receiptPath}`);
}

/** A second, honest payment from the payer is refused: the payer is blocked. */
async function assertBlocked(payerIndex) {
  const again = await send(BATCHED, await signPayment(devPrivateKey(payerIndex), await offer(BATCHED)));
  assert.equal(again.status, 402, `payer ${payerIndex} is refused after burning a nonce: ${again.body}`);
  assert.match(again.body, /refused until/);
}

/** payTo's balance equals, to the unit, the payments the journal says are settled. */
async function assertLedger() {
  const out = runCli(["payments", "--journal", journalPath, "list", "--state", "settled"]);
  assert.equal(out.status, 0, out.stderr);
  const settled = out.stdout.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line));
  const journaledValue = settled.reduce((sum, p) => sum + BigInt(p.amount), 0n);
  assert.equal(await balanceOf(env.devnet.url, payTo), journaledValue, `settled in the journal: ${JSON.stringify(settled)}`);
}

test("batched route, nonce burnt before the request: never settled, the payer is blocked", async () => {
  const payerIndex = 2;
  const payment = await signPayment(devPrivateKey(payerIndex), await offer(BATCHED));
  const nonce = payment.payload.authorization.nonce;
  await burnNonce(env.devnet.url, devAccount(payerIndex), nonce);
  // The node may answer with the hash before the block that burns it is mined.
  await eventually(() => authorizationState(env.devnet.url, devAccount(payerIndex).address, nonce), 10_000, "the nonce burnt on-chain");

  const res = await send(BATCHED, payment);
  if (res.status === 200) {
    const final = await finalState(res.receipt);
    assert.equal(final.state, "failed", `served on a burnt nonce and journaled as ${JSON.stringify(final)}`);
    assert.match(final.reason, /without paying|burnt|not pay/);
  } else {
    assert.equal(res.status, 402, res.body);
    assert.equal(res.reason, "invalid_exact_evm_nonce_already_used");
  }
  await assertBlocked(payerIndex);
  await assertLedger();
});

test("batched route, nonce burnt while the settlement is on its way: never settled, the payer is blocked", async () => {
  const payerIndex = 3;
  const { res } = await servedThenFrontRun(payerIndex, burnNonce);
  const final = await finalState(res.receipt);
  assert.equal(final.state, "failed", `front-run and journaled as ${JSON.stringify(final)}`);
  assert.match(final.reason, /without paying|burnt|not pay/);
  await assertBlocked(payerIndex);
  await assertLedger();
});

test("settle-before route, nonce burnt before the request: refused before anything is journaled", async () => {
  const payerIndex = 4;
  const payer = devAccount(payerIndex).address;
  const payment = await signPayment(devPrivateKey(payerIndex), await offer(BEFORE));
  await burnNonce(env.devnet.url, devAccount(payerIndex), payment.payload.authorization.nonce);
  await eventually(() => authorizationState(env.devnet.url, payer, payment.payload.authorization.nonce), 10_000, "the nonce burnt on-chain");
  const hitsBefore = hits.get(BEFORE) ?? 0;

  const res = await send(BEFORE, payment);
  assert.equal(res.status, 402, `served on a burnt nonce: ${res.body}`);
  assert.equal(res.reason, "invalid_exact_evm_nonce_already_used");
  assert.equal(hits.get(BEFORE) ?? 0, hitsBefore, "the upstream never saw the request");
  assert.deepEqual(journaled(payer), [], "nothing journaled");
  await assertLedger();
});

test("settle-before route, nonce burnt while its settlement is on its way: refused, the payer is blocked", async () => {
  const payerIndex = 5;
  await rpc(env.devnet.url, "evm_setAutomine", [false]);
  const payment = await signPayment(devPrivateKey(payerIndex), await offer(BEFORE));
  const hitsBefore = hits.get(BEFORE) ?? 0;
  const answer = send(BEFORE, payment);

  const { burnt, settled } = await frontRunSettlement(payerIndex, payment.payload.authorization.nonce);
  assert.ok(BigInt(burnt.blockNumber) < BigInt(settled.blockNumber), "the burn landed before the settlement");
  const res = await answer;
  assert.equal(res.status, 402, `served for a front-run payment: ${res.body}`);
  assert.equal(res.reason, "invalid_exact_evm_nonce_already_used");
  assert.equal(hits.get(BEFORE) ?? 0, hitsBefore, "the upstream never saw the request");
  const [record] = journaled(devAccount(payerIndex).address);
  assert.equal(record.state, "failed");
  await assertBlocked(payerIndex);
  await assertLedger();
});

test("batched route, authorization cancelled while the settlement is on its way: failed as cancelled, the payer is blocked", async () => {
  const payerIndex = 6;
  const { res, burnt: cancelled } = await servedThenFrontRun(payerIndex, cancelAuthorization);
  const final = await finalState(res.receipt);
  assert.equal(final.state, "failed");
  // Recognised by its AuthorizationCanceled event, in the payer's own transaction.
  assert.match(final.reason, new RegExp(`cancelled by the payer \\(AuthorizationCanceled in ${cancelled.transactionHash}\\)`));
  await assertBlocked(payerIndex);
  await assertLedger();
});
