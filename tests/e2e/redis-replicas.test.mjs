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
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { devPrivateKey } from "../../deploy/devnet/devnet.mjs";
import { startChainAndUpstream, startTestGateway, freshAddress, freePort, balanceOf, eventually, b64, unb64, GATEWAY_BIN } from "./harness.mjs";
import { signPayment } from "./payments.mjs";

let env;
const running = [];

before(async () => {
  env = await startChainAndUpstream();
});

after(async () => {
  for (const stop of running.reverse()) await stop();
  await env?.stop();
});

const newJournal = () => join(mkdtempSync(join(tmpdir(), "x402-replica-")), "journal.db");

function storeYaml(url, prefix = `x402-test-${randomBytes(6).toString("hex")}`) {
  // A generous timeout: a busy test machine must not read as an outage.
  return `store:\n  kind: redis\n  url: "${url}"\n  key_prefix: "${prefix}"\n  timeout_ms: 1000\n`;
}

/** One replica: its own journal and settlement key, the shared store. */
async function startReplica({ payTo, store, settlementKey, exposureYaml = "", settlement = {} }) {
  const journal = newJournal();
  const listenPort = await freePort();
  const gateway = await startTestGateway(env, {
    payTo,
    admin: true,
    listenPort,
    settlement: { journal_path: journal, ...settlement },
    // Where the other replicas forward receipt look-ups for the payments this one takes.
    extraYaml: `${store}  advertise_url: "http://127.0.0.1:${listenPort}"\n${exposureYaml}`,
    gatewayEnv: { X402_SETTLEMENT_KEY: settlementKey },
  });
  running.push(() => gateway.stop());
  gateway.journal = journal;
  return gateway;
}

/** Two replicas (settlement keys of dev accounts 0 and 9) sharing one key prefix. */
async function startPair({ payTo, exposureYaml, settlement, url = "redis://127.0.0.1:6379/0" }) {
  const store = storeYaml(url);
  const a = await startReplica({ payTo, store, settlementKey: devPrivateKey(0), exposureYaml, settlement });
  const b = await startReplica({ payTo, store, settlementKey: devPrivateKey(9), exposureYaml, settlement });
  return [a, b];
}

async function offer(gateway) {
  return unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
}

async function pay(gateway, payment, path = "/weather") {
  const res = await fetch(gateway.base + path, { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  const body = await res.text();
  const reason = res.status === 402 ? unb64(res.headers.get("payment-required")).error : res.status === 503 ? JSON.parse(body).error : undefined;
  return { status: res.status, reason, retryAfter: res.headers.get("retry-after") };
}

async function cli(args, extraEnv = {}) {
  try {
    const { stdout, stderr } = await promisify(execFile)(GATEWAY_BIN, args, { env: { ...process.env, ...extraEnv }, timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    return { code: error.code ?? 1, stdout: error.stdout ?? "", stderr: error.stderr ?? String(error) };
  }
}

async function journaled(journal) {
  const { stdout } = await cli(["payments", "--journal", journal, "list", "--limit", "0"]);
  return stdout.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line));
}

async function exposureTotal(gateway) {
  return (await (await gateway.admin("/exposure")).json()).totalUsdMicros;
}

test("one payment sent 50 times at once across two replicas buys exactly one response, settled once", async () => {
  const payTo = freshAddress();
  const [a, b] = await startPair({ payTo });
  const payment = await signPayment(devPrivateKey(2), await offer(a));
  const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => pay(i % 2 ? b : a, payment)));
  const served = answers.filter((x) => x.status === 200).length;
  assert.equal(served, 1, answers.map((x) => `${x.status} ${x.reason}`).join(", "));
  assert.ok(answers.filter((x) => x.status !== 200).every((x) => x.status === 402 && x.reason === "invalid_exact_evm_nonce_already_used"));
  await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === 1000n, 30_000, "payTo +1000 on-chain");
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

/** A private redis-server on `port`, killed by the test. */
async function startRedis(port) {
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  const exited = new Promise((r) => child.once("exit", r));
  await eventually(() => redisAnswers(port), 10_000, `redis-server on ${port}`);
  return { kill: async () => { child.kill("SIGKILL"); await exited; } };
}

function redisAnswers(port) {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("error", () => resolve(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.once("data", (data) => {
      socket.destroy();
      resolve(data.toString().startsWith("+PONG"));
    });
  });
}

test("Redis gone: priced routes answer 503 store_unavailable, free routes 200; payments resume once it is back", async () => {
  const port = await freePort();
  let redis = await startRedis(port);
  running.push(() => redis.kill());
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

  // The same payment that was refused works once Redis is back: nothing of it was held.
  const kept = await signPayment(devPrivateKey(5), accepts);
  assert.equal((await pay(gateway, kept)).status, 503);
  redis = await startRedis(port);
  await eventually(async () => (await pay(gateway, kept)).status === 200, 20_000, "a paid request served after Redis returns");
  await eventually(async () => !(await (await fetch(gateway.adminBase + "/ready")).json()).degraded, 10_000, "readiness recovers");
});

test("a replica killed -9: the other keeps serving, and its journal is settled from elsewhere exactly once", async () => {
  const payTo = freshAddress();
  const store = storeYaml("redis://127.0.0.1:6379/0");
  // The replica that dies never settles on its own.
  const a = await startReplica({ payTo, store, settlementKey: devPrivateKey(0), settlement: { max_wait_ms: 600_000 } });
  const b = await startReplica({ payTo, store, settlementKey: devPrivateKey(9) });
  const accepts = await offer(a);
  const lost = await signPayment(devPrivateKey(6), accepts);
  assert.equal((await pay(a, lost)).status, 200);
  assert.equal(await exposureTotal(b), 1000, "the shared ledger counts the lost replica's payment");
  await a.stop("SIGKILL");

  assert.equal((await pay(b, await signPayment(devPrivateKey(7), accepts))).status, 200, "the other replica keeps serving");
  const replay = await pay(b, lost);
  assert.deepEqual([replay.status, replay.reason], [402, "invalid_exact_evm_nonce_already_used"], "the dead replica's payment stays spent");
  await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === 1000n, 30_000, "the live replica's payment settles");

  // Another machine, with the lost replica's journal, config and settlement key.
  const settleArgs = ["payments", "--config", a.configPath, "--journal", a.journal, "settle", "--timeout-seconds", "60"];
  const settled = await cli(settleArgs, { X402_SETTLEMENT_KEY: devPrivateKey(0) });
  assert.equal(settled.code, 0, settled.stderr);
  assert.equal(await balanceOf(env.devnet.url, payTo), 2000n, "payTo received both payments");
  assert.deepEqual((await journaled(a.journal)).map((row) => row.state), ["settled"]);
  await eventually(async () => (await exposureTotal(b)) === 0, 10_000, "the lost replica's room in the shared store is freed");

  const again = await cli(settleArgs, { X402_SETTLEMENT_KEY: devPrivateKey(0) });
  assert.equal(again.code, 0, again.stderr);
  assert.equal(await balanceOf(env.devnet.url, payTo), 2000n, "settling again pays nothing twice");
});
