// What a misbehaving shared store must not buy anyone. Through real gateway binaries, a
// private redis-server or a relay that delays Redis's answers, and the dev chain:
// - Redis restarted empty under running replicas: a payment charged on one replica is not
//   served again by the other (every replica restores its journal into the emptied store
//   before payments resume), and the fleet's exposure counts what the journals owe;
// - a hold Redis ran but answered after store.timeout_ms: the 503 said nothing was charged,
//   so the same payment works on retry and nothing of it stays counted.
import { test } from "node:test";
import assert from "node:assert/strict";
import { devPrivateKey } from "../../deploy/devnet/devnet.mjs";
import { freshAddress, eventually } from "./harness.mjs";
import { signPayment } from "./payments.mjs";
import { replicaSuite, storeYaml, offer, pay, exposureTotal, startRedis, startSlowRelay, freePort } from "./replicas.mjs";

const suite = replicaSuite();

test("Redis restarted empty under running replicas: a payment charged on one is not served again by the other", async () => {
  const port = await freePort();
  let redis = await startRedis(port);
  suite.fleet.onStop(() => redis.kill());
  // Nothing settles during the test: every payment stays owed.
  const [a, b] = await suite.fleet.startPair({ payTo: freshAddress(), settlement: { max_wait_ms: 600_000 }, url: `redis://127.0.0.1:${port}/0` });
  const accepts = await offer(a);
  const payment = await signPayment(devPrivateKey(2), accepts);
  assert.equal((await pay(a, payment)).status, 200, "A serves the payment");
  assert.deepEqual(Object.values(await pay(b, payment)).slice(0, 2), [402, "invalid_exact_evm_nonce_already_used"]);

  // Redis restarts without its data (no persistence, a failover to a lagging replica, FLUSHALL).
  await redis.kill();
  redis = await startRedis(port);
  await eventually(async () => (await pay(a, await signPayment(devPrivateKey(3), accepts))).status === 200, 30_000, "A takes payments again");
  await eventually(async () => (await pay(b, await signPayment(devPrivateKey(3), accepts))).status === 200, 30_000, "B takes payments again");

  const replay = await pay(b, payment);
  assert.deepEqual([replay.status, replay.reason], [402, "invalid_exact_evm_nonce_already_used"], "the payment A charged before the loss stays spent");
  assert.equal(await exposureTotal(b), 3000, "the store counts what both journals owe: the restored payment and the two taken since");
});

test("a hold Redis ran but answered late: the same payment works on retry and nothing of it stays counted", async () => {
  const relay = await startSlowRelay(6379);
  suite.fleet.onStop(() => relay.close());
  // A total limit of one payment: a count left behind would refuse everybody.
  const exposureYaml = `exposure:\n  max_unsettled_total: "$0.001"\n`;
  const gateway = await suite.fleet.startReplica({
    payTo: freshAddress(),
    store: storeYaml(`redis://127.0.0.1:${relay.port}/0`, { timeoutMs: 150 }),
    settlementKey: devPrivateKey(0),
    exposureYaml,
    settlement: { max_wait_ms: 600_000 },
  });
  const accepts = await offer(gateway);
  const payment = await signPayment(devPrivateKey(4), accepts);

  relay.delayMs = 400; // Redis answers, but after store.timeout_ms
  const first = await pay(gateway, payment);
  assert.deepEqual([first.status, first.reason], [503, "store_unavailable"], "a slow store refuses the payment (fail closed)");
  relay.delayMs = 0;
  await eventually(async () => (await exposureTotal(gateway)) === 0, 10_000, "the late hold is undone");
  assert.equal((await pay(gateway, payment)).status, 200, "the retry the 503 advised works");
  assert.equal(await exposureTotal(gateway), 1000);
});
