// Replicas whose store.url names Redis Sentinels follow the primary when it moves. Through
// real gateway binaries, a private primary, its replica and a Sentinel, and the dev chain:
// - a failover Sentinel is asked for: the old primary is demoted and answers writes with
//   READONLY, and both replicas connect to the new primary and take payments again;
// - the new primary killed -9: Sentinel promotes the old one, and the replicas follow again;
// - through both, a payment charged before stays spent on every replica;
// - store.wait_for_replicas: a payment no store replica confirmed is refused (a failover
//   could forget it), nothing of it stays charged, and the same payment works afterwards.
import { test } from "node:test";
import assert from "node:assert/strict";
import { devPrivateKey } from "../../deploy/devnet/devnet.mjs";
import { freshAddress, eventually } from "./harness.mjs";
import { signPayment } from "./payments.mjs";
import { replicaSuite, storeYaml, offer, pay, exposureTotal, startRedis, startSentinel, redisCommand, freePort } from "./replicas.mjs";

const suite = replicaSuite();
const SERVICE = "x402-store";

const primaryPort = async (sentinel) => (await redisCommand(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)).split("\n")[1];
const inSync = async (port) => (await redisCommand(port, "INFO", "replication")).includes("master_link_status:up");

async function takesPayments(gateway, accepts, payerIndex, label) {
  await eventually(async () => (await pay(gateway, await signPayment(devPrivateKey(payerIndex), accepts))).status === 200, 60_000, label);
}

async function assertSpent(gateway, payment, label) {
  const replay = await pay(gateway, payment);
  assert.deepEqual([replay.status, replay.reason], [402, "invalid_exact_evm_nonce_already_used"], label);
}

test("replicas follow the primary Sentinel names, through a failover and a dead primary, and a charged payment stays spent", async () => {
  const [firstPort, secondPort, sentinelPort] = [await freePort(), await freePort(), await freePort()];
  const first = await startRedis(firstPort);
  suite.fleet.onStop(() => first.kill());
  const second = await startRedis(secondPort, ["--replicaof", "127.0.0.1", String(firstPort)]);
  suite.fleet.onStop(() => second.kill());
  await eventually(() => inSync(secondPort), 15_000, "the replica syncs with the primary");
  const sentinel = await startSentinel(sentinelPort, firstPort, SERVICE);
  suite.fleet.onStop(() => sentinel.kill());
  await eventually(async () => (await redisCommand(sentinelPort, "SENTINEL", "REPLICAS", SERVICE)).includes(String(secondPort)), 30_000, "Sentinel knows the replica");

  const url = `redis+sentinel://127.0.0.1:${sentinelPort}/${SERVICE}/0`;
  const [a, b] = await suite.fleet.startPair({ payTo: freshAddress(), settlement: { max_wait_ms: 600_000 }, url });
  const accepts = await offer(a);
  const payment = await signPayment(devPrivateKey(2), accepts);
  assert.equal((await pay(a, payment)).status, 200, "A serves the payment through the primary Sentinel names");
  await assertSpent(b, payment, "B sees it charged");

  // A failover on request: the old primary becomes a replica and refuses writes (READONLY).
  await eventually(() => inSync(secondPort), 15_000, "the replica holds the charge before the failover");
  assert.equal(await redisCommand(sentinelPort, "SENTINEL", "FAILOVER", SERVICE), "OK");
  await eventually(async () => (await primaryPort(sentinelPort)) === String(secondPort), 30_000, "Sentinel names the replica primary");
  await takesPayments(a, accepts, 3, "A takes payments on the new primary");
  await takesPayments(b, accepts, 4, "B takes payments on the new primary");
  await assertSpent(b, payment, "the payment charged before the failover stays spent");

  // The new primary dies: Sentinel promotes the old one, which has caught up as its replica.
  await eventually(() => inSync(firstPort), 30_000, "the old primary syncs as a replica");
  await second.kill();
  await eventually(async () => (await primaryPort(sentinelPort)) === String(firstPort), 60_000, "Sentinel promotes the old primary again");
  await takesPayments(a, accepts, 5, "A takes payments after the primary died");
  await takesPayments(b, accepts, 6, "B takes payments after the primary died");
  await assertSpent(a, payment, "the first payment stays spent");
});

test("store.wait_for_replicas: a payment no store replica confirmed is refused with nothing charged, and works once the replica answers", async () => {
  const [mainPort, replicaPort] = [await freePort(), await freePort()];
  const primary = await startRedis(mainPort);
  suite.fleet.onStop(() => primary.kill());
  const replica = await startRedis(replicaPort, ["--replicaof", "127.0.0.1", String(mainPort)]);
  suite.fleet.onStop(async () => {
    replica.resume();
    await replica.kill();
  });
  await eventually(() => inSync(replicaPort), 15_000, "the replica syncs with the primary");
  const gateway = await suite.fleet.startReplica({
    payTo: freshAddress(),
    store: storeYaml(`redis://127.0.0.1:${mainPort}/0`, { extra: "  wait_for_replicas: 1\n" }),
    settlementKey: devPrivateKey(0),
    settlement: { max_wait_ms: 600_000 },
  });
  const accepts = await offer(gateway);
  assert.equal((await pay(gateway, await signPayment(devPrivateKey(2), accepts))).status, 200, "the replica confirms: accepted");

  replica.pause(); // connected, and confirming nothing
  const payment = await signPayment(devPrivateKey(3), accepts);
  const refused = await pay(gateway, payment);
  assert.deepEqual([refused.status, refused.reason], [503, "store_unavailable"], "held on the primary alone: refused");
  assert.ok(Number(refused.retryAfter) > 0, "with Retry-After");
  replica.resume();
  await eventually(async () => (await exposureTotal(gateway)) === 1000, 15_000, "the unconfirmed hold no longer counts");
  await eventually(async () => (await pay(gateway, payment)).status === 200, 15_000, "the same payment works once the replica answers");
  assert.equal(await exposureTotal(gateway), 2000);
});
