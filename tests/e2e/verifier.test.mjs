// Signature recovery runs on its own threads behind a bounded queue. A flood of payments
// whose signatures fail only at recovery gets 402 (refused) or 503 (no room, retry the
// same payment); valid payments caught in it are not used up by a 503 and are charged
// exactly once when resent; free routes keep answering; `verify_threads: 0` recovers on
// the workers. Real binary over TCP, real anvil, real settlement.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { devPrivateKey } from "../../deploy/devnet/devnet.mjs";
import {
  startChainAndUpstream, startTestGateway, freshAddress, balanceOf, eventually, b64, unb64, runCli, testConfig, ADMIN_TOKEN,
} from "./harness.mjs";
import { signPayment } from "./payments.mjs";

let env;
const gateways = [];

before(async () => {
  env = await startChainAndUpstream();
});

after(async () => {
  for (const gateway of gateways) {
    if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway.logs());
    await gateway.stop();
  }
  await env?.stop();
});

async function start(options) {
  const gateway = await startTestGateway(env, options);
  gateways.push(gateway);
  return gateway;
}

async function offer(gateway) {
  return unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
}

async function pay(gateway, payment) {
  const res = await fetch(gateway.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  return { status: res.status, retryAfter: res.headers.get("retry-after"), body: await res.json().catch(() => null) };
}

function sample(text, name, labels) {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const line = text.split("\n").find((l) => l.startsWith(name + "{") && wanted.every((pair) => l.includes(pair)));
  return line ? Number(line.split(" ").pop()) : 0;
}

/** `x402_verify_queue_depth`; fails when the gauge is not exported at all. */
function queueDepth(text) {
  const line = text.split("\n").find((l) => l.startsWith("x402_verify_queue_depth "));
  assert.ok(line, "x402_verify_queue_depth is exported");
  return Number(line.split(" ").pop());
}

test("a flood of bad signatures gets 402 or 503-retry; valid payments caught in it are charged once when resent", async () => {
  const payTo = freshAddress();
  const gateway = await start({ payTo, admin: true, server: { verify_threads: 1, verify_queue: 1 } });
  const accepts = await offer(gateway);
  // Well formed, right payee, amount and window: only recovery can tell it is not from `from`.
  const forged = await signPayment(devPrivateKey(3), accepts, { domain: { chainId: 8453 } });
  const valid = await Promise.all(Array.from({ length: 20 }, () => signPayment(devPrivateKey(3), accepts)));
  const burst = Array.from({ length: 400 }, (_, i) => (i % 20 === 10 ? valid[i / 20 - 0.5] : forged));
  // The queue-depth gauge, read while the burst runs.
  const depths = [];
  let bursting = true;
  const watching = (async () => {
    while (bursting) depths.push(queueDepth(await (await gateway.admin("/metrics")).text()));
  })();
  const answers = await Promise.all(burst.map((payment) => pay(gateway, payment)));
  bursting = false;
  await watching;
  // A payment is counted just before it is offered to the queue, so a refused one counts for
  // that instant: at most one per worker above the queue's size, and never below zero.
  const bound = 1 + cpus().length;
  assert.ok(depths.every((d) => d >= 0 && d <= bound), `x402_verify_queue_depth stays within 0..${bound}: ${depths}`);

  const refused = answers.filter((a, i) => burst[i] === forged && a.status === 402);
  const busy = answers.filter((a) => a.status === 503);
  assert.ok(refused.length > 0, "some forged payments reached recovery");
  assert.ok(busy.length > 0, "a queue of one cannot hold a burst of 400: some were turned away");
  for (const [i, answer] of answers.entries()) {
    if (answer.status === 503) {
      assert.equal(answer.retryAfter, "1");
      assert.equal(answer.body.error, "unexpected_verify_error");
      assert.match(answer.body.message, /at capacity.*retry the same payment/);
    } else if (burst[i] === forged) {
      assert.equal(answer.status, 402, "a forged payment is never served");
      assert.equal(answer.body.error, "invalid_exact_evm_signature");
    } else {
      assert.equal(answer.status, 200);
    }
  }

  // A 503 did not use the payment up: resent, each is served once, and a second time refused.
  const turnedAway = valid.filter((_, k) => answers[k * 20 + 10].status === 503);
  for (const payment of turnedAway) assert.equal((await pay(gateway, payment)).status, 200);
  for (const payment of valid) assert.equal((await pay(gateway, payment)).body.error, "invalid_exact_evm_nonce_already_used");
  assert.equal((await pay(gateway, forged)).body.error, "invalid_exact_evm_signature");
  assert.equal((await fetch(gateway.base + "/health")).status, 200, "free routes still answer");

  const text = await (await gateway.admin("/metrics")).text();
  assert.equal(sample(text, "x402_payments_rejected_total", { route: "weather", reason: "unexpected_verify_error" }), busy.length);
  assert.equal(queueDepth(text), 0, "nothing waits for a verify thread once the burst is answered");
  await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === 20n * 1000n, 30_000, "20 payments settled");
});

test("verify_threads: 0 recovers signatures on the workers", async () => {
  const gateway = await start({ payTo: freshAddress(), server: { verify_threads: 0 } });
  const accepts = await offer(gateway);
  assert.equal((await pay(gateway, await signPayment(devPrivateKey(4), accepts))).status, 200);
  const forged = await pay(gateway, await signPayment(devPrivateKey(4), accepts, { domain: { chainId: 8453 } }));
  assert.equal(forged.status, 402);
  assert.equal(forged.body.error, "invalid_exact_evm_signature");
});

test("a verifier queue of 0 is refused at validation, with the field named", () => {
  const yaml = testConfig({
    listenPort: 1, rpcUrl: "http://127.0.0.1:1", upstreamPort: 2, deadPort: 3, payTo: freshAddress(), server: { verify_queue: 0 },
  });
  const path = join(mkdtempSync(join(tmpdir(), "x402-verifier-")), "gateway.yaml");
  writeFileSync(path, yaml);
  const result = runCli(["validate", "--config", path], { X402_ADMIN_TOKEN: ADMIN_TOKEN });
  assert.equal(result.status, 1);
  assert.match(result.stderr, /server\.verify_queue: must be at least 1/);
});
