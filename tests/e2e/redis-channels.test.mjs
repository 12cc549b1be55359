// batch-settlement channels shared by two replicas through the machine's Redis (a fresh key
// prefix), with the official @x402/evm channel client on the dev chain. Every replica holds
// the same receiver authorizer key (settlement.channels.receiver_authorizer_key_env) and its
// own settlement key:
// - a channel opened on one replica is paid on both: each charge continues the cumulative the
//   other recorded, and the claims pay payTo exactly what was charged, once;
// - one request in flight per channel across the fleet: two vouchers at once on two replicas,
//   one served, the other answered busy;
// - the replica that claims is killed -9: the other takes over its claims.
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodePaymentResponseHeader } from "@x402/fetch";
import { decodeFunctionResult, encodeFunctionData } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { devPrivateKey, rpc, BATCH_SETTLEMENT_ADDRESS, BATCH_SETTLEMENT_ABI } from "../../deploy/devnet/devnet.mjs";
import { channelClient, channelRoute } from "./channel-client.mjs";
import { freshAddress, balanceOf, eventually, b64, unb64 } from "./harness.mjs";
import { replicaSuite, storeYaml, MACHINE_REDIS } from "./replicas.mjs";

const suite = replicaSuite();
const PRICE = 1000n;
const ROUTES = channelRoute("metered", "/echo/{name}") + channelRoute("metered-slow", "/slow");
const AUTHORIZER_KEY = devPrivateKey(15); // holds no gas: it only signs claim batches

async function fleetOfTwo(payTo) {
  const store = storeYaml(MACHINE_REDIS);
  const settlement = { max_wait_ms: 300, channels: { claim_interval_seconds: 1, refresh_interval_seconds: 2, receiver_authorizer_key_env: "X402_CHANNEL_AUTHORIZER" } };
  const replica = (key) =>
    suite.fleet.startReplica({ payTo, store, settlementKey: devPrivateKey(key), settlement, extraRoutes: ROUTES, gatewayEnv: { X402_CHANNEL_AUTHORIZER: AUTHORIZER_KEY } });
  return [await replica(0), await replica(9)];
}

function charged(res) {
  return BigInt(decodePaymentResponseHeader(res.headers.get("payment-response")).extra.channelState.chargedCumulativeAmount);
}

async function claimedOnChain(channelId) {
  const data = encodeFunctionData({ abi: BATCH_SETTLEMENT_ABI, functionName: "channels", args: [channelId] });
  const out = await rpc(suite.env.devnet.url, "eth_call", [{ to: BATCH_SETTLEMENT_ADDRESS, data }, "latest"]);
  return decodeFunctionResult({ abi: BATCH_SETTLEMENT_ABI, functionName: "channels", data: out })[1];
}

test("a channel opened on one replica is paid on both, each charge continuing the other's, and claimed to payTo exactly once", { timeout: 180_000 }, async () => {
  const payTo = freshAddress();
  const [a, b] = await fleetOfTwo(payTo);
  const offer = unb64((await fetch(a.base + "/echo/metered")).headers.get("payment-required")).accepts.find((e) => e.scheme === "batch-settlement");
  assert.equal(offer.extra.receiverAuthorizer, privateKeyToAccount(AUTHORIZER_KEY).address, "every replica offers the shared authorizer");
  const { pay } = channelClient(suite.env.devnet.url, devPrivateKey(4));
  let channelId;
  for (let i = 1n; i <= 6n; i += 1n) {
    const replica = i % 2n === 1n ? a : b;
    const res = await pay(replica.base + "/echo/metered");
    assert.equal(res.status, 200, `request ${i} on ${replica === a ? "A" : "B"}: ${await res.clone().text()}`);
    await res.arrayBuffer();
    assert.equal(charged(res), i * PRICE, "the cumulative continues across replicas");
    channelId ??= decodePaymentResponseHeader(res.headers.get("payment-response")).extra.channelState.channelId;
  }
  await eventually(async () => (await balanceOf(suite.env.devnet.url, payTo)) === 6n * PRICE, 60_000, "the claims paid payTo for six requests");
  assert.equal(await claimedOnChain(channelId), 6n * PRICE, "claimed exactly what was charged");
  assert.equal(BigInt(await rpc(suite.env.devnet.url, "eth_getTransactionCount", [privateKeyToAccount(AUTHORIZER_KEY).address, "latest"])), 0n);
});

test("two vouchers at once on one channel, on two replicas: one is served, the other is answered busy", { timeout: 120_000 }, async () => {
  const [a, b] = await fleetOfTwo(freshAddress());
  const { pay, scheme } = channelClient(suite.env.devnet.url, devPrivateKey(6));
  assert.equal((await pay(a.base + "/echo/metered")).status, 200, "opens the channel");
  const required = unb64((await fetch(a.base + "/slow")).headers.get("payment-required"));
  const offer = required.accepts.find((e) => e.scheme === "batch-settlement");
  // Both carry the same cumulative; A's slow upstream holds the channel while B is asked.
  const voucher = async () => ({ x402Version: 2, resource: required.resource, accepted: offer, payload: (await scheme.createPaymentPayload(2, offer)).payload });
  const [first, second] = [await voucher(), await voucher()];
  const send = (replica, payment) => fetch(replica.base + "/slow?ms=2000", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  const slow = send(a, first);
  await eventually(async () => (await (await a.admin("/metrics")).text()).includes("x402_channel_requests_in_flight 1"), 10_000, "A holds the channel");
  const answers = [await send(b, second), await slow];
  assert.deepEqual(answers.map((r) => r.status), [402, 200], "B refuses while A serves");
  assert.equal(unb64(answers[0].headers.get("payment-required")).error, "invalid_batch_settlement_evm_channel_busy");
});

test("the replica that claims is killed -9: the other claims what both charged", { timeout: 180_000 }, async () => {
  const payTo = freshAddress();
  const [a, b] = await fleetOfTwo(payTo);
  const sentByB = async () => BigInt(await rpc(suite.env.devnet.url, "eth_getTransactionCount", [privateKeyToAccount(devPrivateKey(9)).address, "latest"]));
  const bBefore = await sentByB();
  const { pay } = channelClient(suite.env.devnet.url, devPrivateKey(7));
  for (const replica of [a, b, a]) assert.equal((await pay(replica.base + "/echo/metered")).status, 200);
  await eventually(async () => (await balanceOf(suite.env.devnet.url, payTo)) === 3n * PRICE, 60_000, "the first claims landed");
  assert.equal(await sentByB(), bBefore, "A, started first, holds the claimer lease: B sent nothing");
  await a.stop("SIGKILL");
  for (let i = 0; i < 2; i += 1) assert.equal((await pay(b.base + "/echo/metered")).status, 200);
  await eventually(async () => (await balanceOf(suite.env.devnet.url, payTo)) === 5n * PRICE, 60_000, "B claimed after A died");
  assert.ok((await sentByB()) > bBefore, "the claim came from B's settlement key");
});
