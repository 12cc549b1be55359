// Two replicas behind one load balancer share their payment ledger through Redis. Through two
// real gateway binaries on different ports, the machine's Redis (a fresh key prefix per test)
// or a private redis-server this file starts and kills, and the dev chain:
// - one payment sent 50 times at once across both replicas buys exactly one response;
// - a payer's exposure limit and the total limit hold across both;
// - a payment charged on one replica is a replay on the other;
// - Redis gone: priced routes answer 503 store_unavailable, free routes 200, and payments are
//   taken again once it is back;
// - a replica killed -9 while the other keeps serving: its journal is settled from elsewhere
//   with `payments settle`, exactly once, and the room it held in the shared store is freed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { privateKeyToAccount } from "viem/accounts";
import { devPrivateKey } from "../../deploy/devnet/devnet.mjs";
import { freshAddress, balanceOf, eventually, b64, unb64 } from "./harness.mjs";
import { signPayment } from "./payments.mjs";
import { replicaSuite, storeYaml, offer, pay, exposureTotal, cli, journaled, startRedis, freePort, MACHINE_REDIS } from "./replicas.mjs";

const suite = replicaSuite();

const startPair = (options) => suite.fleet.startPair(options);
const startReplica = (options) => suite.fleet.startReplica(options);

test("one payment sent 50 times at once across two replicas buys exactly one response, settled once", async () => {
  const payTo = freshAddress();
  const [a, b] = await startPair({ payTo });
  const payment = await signPayment(devPrivateKey(2), await offer(a));
  const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => pay(i % 2 ? b : a, payment)));
  const served = answers.filter((x) => x.status === 200).length;
  assert.equal(served, 1, answers.map((x) => `${x.status} ${x.reason}`).join(", "));
  assert.ok(answers.filter((x) => x.status !== 200).every((x) => x.status === 402 && x.reason === "invalid_exact_evm_nonce_already_used"));
  await eventually(async () => (await balanceOf(suite.env.devnet.url, payTo)) === 1000n, 30_000, "payTo +1000 on-chain");
  const rows = [...(await journaled(a.journal)), ...(await journaled(b.journal))];
  assert.equal(rows.length, 1, "one journal row across both replicas");
  await eventually(async () => (await exposureTotal(a)) === 0, 10_000, "the settled payment no longer counts");
});

test("a payer's exposure limit and the total limit hold across both replicas", async () => {
  const exposureYaml = `exposure:\n  max_unsettled_per_payer: "$0.003"\n  max_unsettled_total: "$0.005"\n`;
  // Nothing settles during the test: every accepted payment keeps counting.
  const [a, b] = await startPair({ payTo: freshAddress(), exposureYaml, settlement: { max_wait_ms: 600_000 } });
  const accepts = await offer(a);
  const payerAnswers = await Promise.all(Array.from({ length: 6 }, async (_, i) => pay(i % 2 ? b : a, await signPayment(devPrivateKey(3), accepts))));
  assert.equal(payerAnswers.filter((x) => x.status === 200).length, 3, payerAnswers.map((x) => `${x.status} ${x.reason}`).join(", "));
  assert.ok(payerAnswers.filter((x) => x.status !== 200).every((x) => x.status === 402));
  // $0.003 of $0.005 is taken: two more payments of other payers fit, whichever replica.
  const others = await Promise.all([4, 5, 6, 7].map(async (k, i) => pay(i % 2 ? b : a, await signPayment(devPrivateKey(k), accepts))));
  assert.equal(others.filter((x) => x.status === 200).length, 2, others.map((x) => `${x.status} ${x.reason}`).join(", "));
  assert.equal(await exposureTotal(a), 5000);
  assert.equal(await exposureTotal(b), 5000, "both replicas read the one ledger");
});

test("a payment charged on one replica is a replay on the other, and its receipt answers on both", async () => {
  const [a, b] = await startPair({ payTo: freshAddress() });
  const payment = await signPayment(devPrivateKey(4), await offer(a));
  const paid = await fetch(a.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  assert.equal(paid.status, 200);
  const again = await pay(b, payment);
  assert.deepEqual([again.status, again.reason], [402, "invalid_exact_evm_nonce_already_used"]);
  // A fresh payment on the other replica is fine.
  assert.equal((await pay(b, await signPayment(devPrivateKey(4), await offer(b)))).status, 200);

  // The load balancer may send the receipt look-up to either replica.
  const receiptPath = unb64(paid.headers.get("payment-response")).extensions["x402-gateway"].receipt;
  const settled = await eventually(async () => {
    const fromB = await fetch(b.base + receiptPath);
    const body = fromB.status === 200 && (await fromB.json());
    return body?.state === "settled" && body;
  }, 30_000, "the other replica answers the receipt, settled");
  assert.deepEqual(settled, await (await fetch(a.base + receiptPath)).json());
  assert.equal((await fetch(b.base + "/.well-known/x402/receipts/" + "0".repeat(32))).status, 404);
  // A forwarded look-up is answered from the receiving replica's journal alone: no loops.
  const direct = await fetch(b.base + receiptPath, { headers: { "x402-gateway-forwarded": "1" } });
  assert.equal(direct.status, 404);
});

test("Redis gone: priced routes answer 503 store_unavailable, free routes 200; payments resume once it is back", async () => {
  const port = await freePort();
  let redis = await startRedis(port);
  suite.fleet.onStop(() => redis.kill());
  const gateway = await startReplica({ payTo: freshAddress(), store: storeYaml(`redis://127.0.0.1:${port}/0`), settlementKey: devPrivateKey(0) });
  const accepts = await offer(gateway);
  assert.equal((await pay(gateway, await signPayment(devPrivateKey(5), accepts))).status, 200);

  await redis.kill();
  const refused = await pay(gateway, await signPayment(devPrivateKey(5), accepts));
  assert.deepEqual([refused.status, refused.reason], [503, "store_unavailable"]);
  assert.ok(Number(refused.retryAfter) > 0, "Retry-After says when to come back");
  assert.equal((await fetch(gateway.base + "/health")).status, 200, "free routes keep working");
  const ready = await eventually(async () => {
    const body = await (await fetch(gateway.adminBase + "/ready")).json();
    return body.degraded === "store_unavailable" && body;
  }, 10_000, "readiness reports the store");
  assert.equal(ready.ready, true);
  const metrics = await (await gateway.admin("/metrics")).text();
  assert.match(metrics, /^x402_store_up 0$/m);
  assert.ok(Number(/^x402_store_errors_total (\d+)$/m.exec(metrics)?.[1]) > 0, "failed store calls are counted");

  // The same payment that was refused works once Redis is back: nothing of it was held.
  const kept = await signPayment(devPrivateKey(5), accepts);
  assert.equal((await pay(gateway, kept)).status, 503);
  redis = await startRedis(port);
  await eventually(async () => (await pay(gateway, kept)).status === 200, 20_000, "a paid request served after Redis returns");
  await eventually(async () => !(await (await fetch(gateway.adminBase + "/ready")).json()).degraded, 10_000, "readiness recovers");
});

test("a replica killed -9: the other keeps serving, and its journal is settled from elsewhere exactly once", async () => {
  const payTo = freshAddress();
  const store = storeYaml(MACHINE_REDIS);
  // The replica that dies never settles on its own.
  const a = await startReplica({ payTo, store, settlementKey: devPrivateKey(0), settlement: { max_wait_ms: 600_000 } });
  const b = await startReplica({ payTo, store, settlementKey: devPrivateKey(9) });
  const accepts = await offer(a);
  const lost = await signPayment(devPrivateKey(6), accepts);
  assert.equal((await pay(a, lost)).status, 200);
  assert.equal(await exposureTotal(b), 1000, "the shared ledger counts the lost replica's payment");
  // A replica still running holds its journal's settler lock: settling it from elsewhere is refused.
  const refused = await cli(["payments", "--config", a.configPath, "--journal", a.journal, "settle"], { X402_SETTLEMENT_KEY: devPrivateKey(0) });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /is settling from/);
  await a.stop("SIGKILL");

  assert.equal((await pay(b, await signPayment(devPrivateKey(7), accepts))).status, 200, "the other replica keeps serving");
  const replay = await pay(b, lost);
  assert.deepEqual([replay.status, replay.reason], [402, "invalid_exact_evm_nonce_already_used"], "the dead replica's payment stays spent");
  await eventually(async () => (await balanceOf(suite.env.devnet.url, payTo)) === 1000n, 30_000, "the live replica's payment settles");

  // Another machine, with the lost replica's journal, config and settlement key.
  const settleArgs = ["payments", "--config", a.configPath, "--journal", a.journal, "settle", "--timeout-seconds", "60"];
  const settled = await cli(settleArgs, { X402_SETTLEMENT_KEY: devPrivateKey(0) });
  assert.equal(settled.code, 0, settled.stderr);
  assert.equal(await balanceOf(suite.env.devnet.url, payTo), 2000n, "payTo received both payments");
  assert.deepEqual((await journaled(a.journal)).map((row) => row.state), ["settled"]);
  await eventually(async () => (await exposureTotal(b)) === 0, 10_000, "the lost replica's room in the shared store is freed");

  const again = await cli(settleArgs, { X402_SETTLEMENT_KEY: devPrivateKey(0) });
  assert.equal(again.code, 0, again.stderr);
  assert.equal(await balanceOf(suite.env.devnet.url, payTo), 2000n, "settling again pays nothing twice");
});

test("a payer blocked in the shared store is refused by every replica until the CLI unblocks it", async () => {
  const [a, b] = await startPair({ payTo: freshAddress() });
  const accepts = await offer(a);
  const payer = privateKeyToAccount(devPrivateKey(8)).address;
  // As a replica's settler leaves it when this payer's authorization was cancelled.
  const prefix = /key_prefix: "([^"]+)"/.exec(readFileSync(a.configPath, "utf8"))[1];
  const until = Math.floor(Date.now() / 1000) + 3600;
  await promisify(execFile)("redis-cli", ["-p", "6379", "HSET", `{${prefix}}blocks`, payer, `${until}|authorization cancelled`]);
  for (const replica of [a, b]) {
    const refused = await pay(replica, await signPayment(devPrivateKey(8), accepts));
    assert.equal(refused.status, 402, "blocked on every replica");
  }
  const unblocked = await cli(["payments", "--config", a.configPath, "--journal", a.journal, "unblock", "--payer", payer]);
  assert.equal(unblocked.code, 0, unblocked.stderr);
  assert.match(unblocked.stdout, /unblocked/);
  for (const replica of [a, b]) {
    assert.equal((await pay(replica, await signPayment(devPrivateKey(8), accepts))).status, 200, "and may pay again everywhere");
  }
});
