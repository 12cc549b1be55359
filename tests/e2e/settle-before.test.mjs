// `settle: before` through the real binary: the payment lands on-chain before the request
// is forwarded, the receipt carries the real transaction, and a payment that fails to
// settle never reaches the upstream.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { devPrivateKey, devAccount, rpc } from "../../deploy/devnet/devnet.mjs";
import { hits } from "../../deploy/devnet/sample-upstream.mjs";
import { payingFetch } from "../../deploy/devnet/pay.mjs";
import { startChainAndUpstream, startTestGateway, settleBeforeRoute, freshAddress, balanceOf, b64, unb64 } from "./harness.mjs";
import { signPayment } from "./payments.mjs";

let env;
let gateway;
const payTo = freshAddress();
const PATH = "/echo/premium";

before(async () => {
  env = await startChainAndUpstream();
  gateway = await startTestGateway(env, {
    payTo,
    // A batch window longer than the test: only settle-before can put these on-chain.
    settlement: { max_wait_ms: 600_000 },
    extraRoutes: settleBeforeRoute(PATH),
  });
});

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway?.logs());
  await gateway?.stop();
  await env?.stop();
});

test("the official client pays a settle-before route: on-chain before the upstream answers, with the transaction in the receipt", async () => {
  const before = await balanceOf(env.devnet.url, payTo);
  const res = await payingFetch(devPrivateKey(2))(gateway.base + PATH);
  assert.equal(res.status, 200);
  assert.equal((await res.json()).path, PATH);
  // Already on-chain when the response arrives: no waiting.
  assert.equal(await balanceOf(env.devnet.url, payTo), before + 10_000n);
  const receipt = unb64(res.headers.get("payment-response"));
  assert.equal(receipt.success, true);
  assert.equal(receipt.payer, devAccount(2).address);
  assert.match(receipt.transaction, /^0x[0-9a-f]{64}$/);
  assert.equal(receipt.extensions["x402-gateway"].settlement, "settled");
  const mined = await rpc(env.devnet.url, "eth_getTransactionReceipt", [receipt.transaction]);
  assert.equal(mined.status, "0x1");
  const lookup = await (await fetch(gateway.base + receipt.extensions["x402-gateway"].receipt)).json();
  assert.equal(lookup.state, "settled");
  assert.equal(lookup.transaction, receipt.transaction);
});

test("a payment that fails to settle is refused and the upstream is never called", async () => {
  const accepts = unb64((await fetch(gateway.base + PATH)).headers.get("payment-required")).accepts[0];
  // A valid signature from a key that holds no tokens: verification passes, settlement cannot.
  const payment = await signPayment("0x" + randomBytes(32).toString("hex"), accepts);
  const hitsBefore = hits.get(PATH) ?? 0;
  const res = await fetch(gateway.base + PATH, { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  assert.equal(res.status, 402);
  const required = unb64(res.headers.get("payment-required"));
  assert.equal(required.error, "invalid_exact_evm_insufficient_balance");
  assert.match((await res.json()).message, /does not cover|not forwarded/, "the message says why");
  assert.equal(hits.get(PATH) ?? 0, hitsBefore, "the upstream never saw the request");
  // Batched routes are unaffected: the same gateway still serves /weather at once.
  const weather = await payingFetch(devPrivateKey(3))(gateway.base + "/weather");
  assert.equal(weather.status, 200);
  assert.equal(unb64(weather.headers.get("payment-response")).transaction, "");
});
