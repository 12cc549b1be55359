// The `batch-settlement` scheme through the real binary: the official @x402/evm 2.27.0
// batch-settlement client (through @x402/fetch) opens a channel on the dev chain's escrow,
// pays with vouchers the gateway checks locally, and the gateway claims them in batches;
// payTo's balance grows by exactly what was served. Dishonest vouchers (wrong amount,
// replayed, foreign channel, concurrent on one channel) are refused with the scheme's codes.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { privateKeyToAccount } from "viem/accounts";
import { decodePaymentResponseHeader } from "@x402/fetch";
import { channelClient as officialChannelClient, channelRoute } from "./channel-client.mjs";
import { devPrivateKey, rpc, BATCH_SETTLEMENT_ADDRESS, BATCH_SETTLEMENT_ABI } from "../../deploy/devnet/devnet.mjs";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { ROOT, startChainAndUpstream, startTestGateway, freshAddress, balanceOf, eventually, b64, unb64 } from "./harness.mjs";

const PRICE = 1000n; // $0.001 in USDC's 6 decimals
const CHANNEL_ROUTE = channelRoute("metered", "/echo/{name}") + channelRoute("metered-slow", "/slow")
  + channelRoute("metered-status", "/status/{code}", { methods: null });

let env;
let gateway;
const payTo = freshAddress();
const journalPath = join(mkdtempSync(join(tmpdir(), "x402-channels-")), "journal.db");

function start() {
  return startTestGateway(env, {
    payTo,
    extraRoutes: CHANNEL_ROUTE,
    admin: true,
    settlement: { journal_path: journalPath, channels: { claim_interval_seconds: 2, refresh_interval_seconds: 2 } },
  });
}

before(async () => {
  env = await startChainAndUpstream();
  gateway = await start();
});

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway?.logs());
  await gateway?.stop();
  await env?.stop();
});

function channelClient(privateKey) {
  return officialChannelClient(env.devnet.url, privateKey);
}

async function challenge(path = "/echo/metered") {
  const res = await fetch(gateway.base + path);
  assert.equal(res.status, 402);
  const required = unb64(res.headers.get("payment-required"));
  return { required, offer: required.accepts.find((entry) => entry.scheme === "batch-settlement") };
}

/** A payment header from the client's own payload for `requirements`, sent as `accepted: offer`. */
async function signed(scheme, required, requirements, offer = requirements) {
  const result = await scheme.createPaymentPayload(2, requirements);
  return { x402Version: 2, resource: required.resource, accepted: offer, payload: result.payload };
}

function send(path, payment) {
  return fetch(gateway.base + path, { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
}

async function onchainChannel(publicClient, channelId) {
  const [balance, totalClaimed] = await publicClient.readContract({
    address: BATCH_SETTLEMENT_ADDRESS, abi: BATCH_SETTLEMENT_ABI, functionName: "channels", args: [channelId],
  });
  return { balance, totalClaimed };
}

test("the challenge offers the channel scheme with the gateway's settlement key as receiverAuthorizer", async () => {
  const { offer } = await challenge();
  assert.equal(offer.amount, String(PRICE));
  assert.equal(offer.payTo, payTo);
  assert.equal(offer.extra.receiverAuthorizer, privateKeyToAccount(devPrivateKey(0)).address);
  assert.equal(offer.extra.withdrawDelay, 900);
  assert.equal(offer.extra.minDeposit, "100000");
});

test("the official client pays 1,000 requests through one channel, topping it up; every one is claimed to payTo", { timeout: 300_000 }, async () => {
  const before = await balanceOf(env.devnet.url, payTo);
  const { pay, scheme } = channelClient(devPrivateKey(3));
  const requests = 1000;
  let deposits = 0;
  let charged = 0n;
  for (let i = 0; i < requests; i += 1) {
    const res = await pay(gateway.base + "/echo/metered");
    assert.equal(res.status, 200, `request ${i}: ${res.status} ${await res.clone().text()}`);
    await res.arrayBuffer();
    const receipt = decodePaymentResponseHeader(res.headers.get("payment-response"));
    assert.equal(receipt.success, true);
    assert.equal(receipt.extra.chargedAmount, String(PRICE));
    charged += BigInt(receipt.extra.chargedAmount);
    assert.equal(receipt.extra.channelState.chargedCumulativeAmount, String(charged), "the cumulative the client advances to");
    if (receipt.transaction) deposits += 1;
  }
  assert.ok(deposits >= 10, `a $0.1 deposit covers 100 requests, so the client topped up (${deposits} deposits)`);
  assert.ok(scheme, "the client kept its own channel state");
  const expected = BigInt(requests) * PRICE;
  await eventually(async () => (await balanceOf(env.devnet.url, payTo)) - before === expected, 60_000, "payTo paid for every request");
  // Nothing more than was served, after a further claim round.
  const metrics = await (await gateway.admin("/metrics")).text();
  assert.match(metrics, /x402_channel_vouchers_total\{route="metered"\} 1000/);
  assert.equal((await balanceOf(env.devnet.url, payTo)) - before, expected);
});

test("a voucher for the wrong amount gets the corrective 402 with the channel's state and the last voucher", async () => {
  const { pay, scheme } = channelClient(devPrivateKey(4));
  assert.equal((await pay(gateway.base + "/echo/metered")).status, 200, "opens the channel");
  const { required, offer } = await challenge();
  const cheap = await signed(scheme, required, { ...offer, amount: "1" }, offer);
  const res = await send("/echo/metered", cheap);
  assert.equal(res.status, 402);
  const refusal = unb64(res.headers.get("payment-required"));
  assert.equal(refusal.error, "invalid_batch_settlement_evm_cumulative_amount_mismatch");
  const entry = refusal.accepts.find((e) => e.scheme === "batch-settlement");
  assert.equal(entry.extra.channelState.chargedCumulativeAmount, String(PRICE));
  assert.equal(entry.extra.voucherState.signedMaxClaimable, String(PRICE));
  assert.match(entry.extra.voucherState.signature, /^0x[0-9a-f]{130}$/i);
});

test("a replayed voucher buys nothing a second time", async () => {
  const { scheme } = channelClient(devPrivateKey(5));
  const { pay } = channelClient(devPrivateKey(5));
  assert.equal((await pay(gateway.base + "/echo/metered")).status, 200, "opens the channel");
  const { required, offer } = await challenge();
  // A second client of the same key learns the cumulative through the corrective 402.
  let payment = await signed(scheme, required, offer);
  let res = await send("/echo/metered", payment);
  if (res.status === 402) {
    const corrective = unb64(res.headers.get("payment-required"));
    assert.ok(await scheme.processCorrectivePaymentRequired(corrective), "the official client resyncs");
    payment = await signed(scheme, required, offer);
    res = await send("/echo/metered", payment);
  }
  assert.equal(res.status, 200);
  await res.arrayBuffer();
  const replay = await send("/echo/metered", payment);
  assert.equal(replay.status, 402, "the same voucher again is refused");
  assert.equal(unb64(replay.headers.get("payment-required")).error, "invalid_batch_settlement_evm_cumulative_amount_mismatch");
});

test("a voucher for a channel to another payTo is refused", async () => {
  const { scheme } = channelClient(devPrivateKey(6));
  const { required, offer } = await challenge();
  const foreign = await signed(scheme, required, { ...offer, payTo: freshAddress() }, offer);
  const res = await send("/echo/metered", foreign);
  assert.equal(res.status, 402);
  assert.match(unb64(res.headers.get("payment-required")).error, /^invalid_batch_settlement_evm_/);
});

test("two vouchers at once on one channel: one is served, the other gets the busy answer", async () => {
  const { pay, scheme } = channelClient(devPrivateKey(7));
  assert.equal((await pay(gateway.base + "/echo/metered")).status, 200, "opens the channel");
  const { required, offer } = await challenge("/slow");
  // Both carry the same cumulative; the slow upstream holds the first while the second arrives.
  const first = await signed(scheme, required, offer);
  const second = await signed(scheme, required, offer);
  const slow = send("/slow?ms=1500", first);
  await eventually(async () => (await (await gateway.admin("/metrics")).text()).includes('x402_channel_requests_in_flight 1'), 5_000, "the first voucher holds its channel");
  const answers = [await send("/slow?ms=1500", second), await slow];
  const statuses = answers.map((r) => r.status).sort();
  assert.deepEqual(statuses, [200, 402]);
  const refused = answers.find((r) => r.status === 402);
  assert.match(unb64(refused.headers.get("payment-required")).error, /^invalid_batch_settlement_evm_channel_busy$/);
});

test("a non-billable answer charges nothing; the next voucher repeats the amount", async () => {
  const { pay } = channelClient(devPrivateKey(8));
  assert.equal((await pay(gateway.base + "/status/200")).status, 200);
  const failed = await pay(gateway.base + "/status/503");
  assert.equal(failed.status, 503);
  assert.equal(failed.headers.get("payment-response"), null, "nothing charged for an upstream error");
  const next = await pay(gateway.base + "/status/200");
  assert.equal(next.status, 200);
  const receipt = decodePaymentResponseHeader(next.headers.get("payment-response"));
  assert.equal(receipt.extra.channelState.chargedCumulativeAmount, String(2n * PRICE));
});

test("kill -9 of the gateway: the channel carries on from the journal, no double charge", { timeout: 120_000 }, async () => {
  const { pay } = channelClient(devPrivateKey(9));
  for (let i = 0; i < 3; i += 1) assert.equal((await pay(gateway.base + "/echo/metered")).status, 200);
  await gateway.stop("SIGKILL");
  gateway = await start();
  const res = await pay(gateway.base + "/echo/metered");
  assert.equal(res.status, 200);
  const receipt = decodePaymentResponseHeader(res.headers.get("payment-response"));
  assert.equal(receipt.extra.channelState.chargedCumulativeAmount, String(4n * PRICE), "the fourth request is charged on top of the three journaled");
});

test("deploy/devnet/pay.mjs pays a channel route with the official client", { timeout: 60_000 }, async () => {
  const script = join(ROOT, "deploy/devnet/pay.mjs");
  // Asynchronously: the sample upstream answers from this process.
  const run = await promisify(execFile)(process.execPath, [script, gateway.base + "/echo/metered", "--count", "3", "--rpc", env.devnet.url], {
    env: { ...process.env, X402_PAYER_KEY: devPrivateKey(2) }, timeout: 50_000,
  });
  assert.match(run.stdout, /HTTP 200 x 3/);
  const receipt = JSON.parse(run.stdout.match(/^PAYMENT-RESPONSE: (.*)$/m)[1]);
  assert.equal(receipt.extra.channelState.chargedCumulativeAmount, String(3n * PRICE));
});

test("a receiver authorizer key apart from the settlement key: offers name it, claims it signs land (claimWithSignature), and it never sends a transaction", { timeout: 120_000 }, async () => {
  const authorizer = privateKeyToAccount(devPrivateKey(15)); // no gas at all on the dev chain
  const payToApart = freshAddress();
  const apart = await startTestGateway(env, {
    payTo: payToApart,
    extraRoutes: CHANNEL_ROUTE,
    settlement: {
      journal_path: join(mkdtempSync(join(tmpdir(), "x402-channels-")), "journal.db"),
      channels: { claim_interval_seconds: 1, refresh_interval_seconds: 2, receiver_authorizer_key_env: "X402_CHANNEL_AUTHORIZER" },
    },
    gatewayEnv: { X402_CHANNEL_AUTHORIZER: devPrivateKey(15) },
  });
  try {
    const required = unb64((await fetch(apart.base + "/echo/metered")).headers.get("payment-required"));
    const offer = required.accepts.find((entry) => entry.scheme === "batch-settlement");
    assert.equal(offer.extra.receiverAuthorizer, authorizer.address, "channels name the authorizer key");
    const { pay } = channelClient(devPrivateKey(2));
    for (let i = 0; i < 3; i += 1) {
      const res = await pay(apart.base + "/echo/metered");
      assert.equal(res.status, 200, await res.clone().text());
      await res.arrayBuffer();
    }
    await eventually(async () => (await balanceOf(env.devnet.url, payToApart)) === 3n * PRICE, 60_000, "the signed claims paid payTo");
    assert.equal(BigInt(await rpc(env.devnet.url, "eth_getTransactionCount", [authorizer.address, "latest"])), 0n, "the authorizer key only signs");
  } finally {
    await apart.stop();
  }
});
