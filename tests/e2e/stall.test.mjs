// A settlement stall is bounded. Through the real binary on the dev chain:
// - the RPC node goes away for longer than a route's maxTimeoutSeconds: once the stall is
//   noticed, readiness turns 503 and priced routes answer 503 settlement_stalled (nothing
//   reserved, nothing journaled), free routes keep working, metrics say why; a payment
//   accepted before the outage settles when the node returns, and none expires;
// - gas above the cap: payments wait past their batch window, the stall is called
//   (not_progressing), and the refused payment works once settlement resumes.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { devPrivateKey } from "../../deploy/devnet/devnet.mjs";
import { startChainAndUpstream, startTestGateway, startRelay, freshAddress, balanceOf, eventually, runCli, sleep, b64, unb64 } from "./harness.mjs";
import { signPayment } from "./payments.mjs";

let env;

before(async () => {
  env = await startChainAndUpstream();
});

after(async () => {
  await env?.stop();
});

async function offer(gateway, path) {
  return unb64((await fetch(gateway.base + path)).headers.get("payment-required")).accepts[0];
}

async function pay(gateway, path, payment) {
  const res = await fetch(gateway.base + path, { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  const text = await res.text();
  return { status: res.status, body: text, retryAfter: res.headers.get("retry-after") };
}

function journalSummary(journalPath) {
  return JSON.parse(runCli(["payments", "--journal", journalPath, "summary"]).stdout);
}

const readiness = async (gateway) => {
  const res = await fetch(gateway.adminBase + "/ready");
  return { status: res.status, body: await res.json() };
};

test("an RPC outage longer than maxTimeoutSeconds: new payments are refused, none accepted expires, service resumes", async () => {
  const relay = await startRelay(Number(new URL(env.devnet.url).port));
  const journalPath = join(mkdtempSync(join(tmpdir(), "x402-stall-")), "journal.db");
  const payTo = freshAddress();
  const gateway = await startTestGateway(env, {
    payTo,
    admin: true,
    rpcUrls: [relay.url],
    settlement: { journal_path: journalPath, max_wait_ms: 1500, stall_after_seconds: 2 },
    payments: { settle_margin_seconds: 3 },
    extraRoutes: `
  - name: quick
    path: /echo/quick
    upstream: sample
    price: "$0.002"
    max_timeout_seconds: 6
`,
  });
  try {
    const weather = await offer(gateway, "/weather");
    const quick = await offer(gateway, "/echo/quick");
    assert.equal(quick.maxTimeoutSeconds, 6);
    // Accepted, then the node goes away before its batch window (1.5 s) closes.
    const accepted = await pay(gateway, "/weather", await signPayment(devPrivateKey(4), weather));
    assert.equal(accepted.status, 200, accepted.body);
    await relay.down();

    await eventually(async () => (await readiness(gateway)).status === 503, 15_000, "readiness turns 503");
    const ready = await readiness(gateway);
    assert.equal(ready.body.cause, "rpc_unreachable");
    assert.match(ready.body.reason, /settlement_stalled/);
    const metrics = await (await gateway.admin("/metrics")).text();
    assert.match(metrics, /^x402_settlement_stalled\{cause="rpc_unreachable"\} 1/m);

    // Longer than the quick route's maxTimeoutSeconds: every payment offered meanwhile is refused.
    const refusedPayment = await signPayment(devPrivateKey(4), quick);
    const until = Date.now() + 7_000;
    let refusals = 0;
    while (Date.now() < until) {
      for (const [path, requirements] of [["/echo/quick", quick], ["/weather", weather]]) {
        const answer = await pay(gateway, path, path === "/echo/quick" ? refusedPayment : await signPayment(devPrivateKey(4), requirements));
        assert.equal(answer.status, 503, answer.body);
        const body = JSON.parse(answer.body);
        assert.equal(body.error, "settlement_stalled");
        assert.match(body.message, /nothing was charged/);
        assert.ok(Number(answer.retryAfter) > 0);
        refusals++;
      }
      const unpaid = await fetch(gateway.base + "/weather");
      assert.equal(unpaid.status, 503, "no challenge either: a client could not be served");
      await unpaid.arrayBuffer();
      assert.equal((await fetch(gateway.base + "/health")).status, 200, "free routes keep working");
      await sleep(500);
    }
    assert.ok(refusals >= 4);
    assert.deepEqual(journalSummary(journalPath), { accepted: 1 }, "nothing refused was journaled");
    // An operator (and the settlement soak) sees the refused payments by reason; unpaid requests are not payments.
    const refusedMetrics = await (await gateway.admin("/metrics")).text();
    const counted = [...refusedMetrics.matchAll(/^x402_payments_rejected_total\{reason="settlement_stalled",route="[^"]+"\} (\d+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
    assert.equal(counted, refusals, "every payment refused during the stall is counted");

    await relay.up();
    await eventually(async () => (await readiness(gateway)).status === 200, 20_000, "readiness recovers");
    await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === 1000n, 20_000, "the payment accepted before the outage settled");
    // A refused payment was never reserved: it still buys a response, within its validity.
    const quickAgain = await signPayment(devPrivateKey(4), quick);
    assert.equal((await pay(gateway, "/echo/quick", quickAgain)).status, 200);
    await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === 3000n, 20_000, "and settled");
    await eventually(() => JSON.stringify(journalSummary(journalPath)) === JSON.stringify({ settled: 2 }), 20_000, "payTo's balance equals the settled journal: nothing expired or failed");
  } finally {
    await gateway.stop();
    await relay.down();
  }
});

test("gas above the cap: payments wait past their batch window, the stall is called, and the refused payment works after", async () => {
  const journalPath = join(mkdtempSync(join(tmpdir(), "x402-stall-gas-")), "journal.db");
  const payTo = freshAddress();
  const settlement = { journal_path: journalPath, max_wait_ms: 100, stall_after_seconds: 1, drain_timeout_seconds: 1 };
  let gateway = await startTestGateway(env, { payTo, admin: true, settlement: { ...settlement, max_fee_per_gas_gwei: 0 } });
  const weather = await offer(gateway, "/weather");
  assert.equal((await pay(gateway, "/weather", await signPayment(devPrivateKey(4), weather))).status, 200);
  await eventually(async () => (await readiness(gateway)).body.cause === "not_progressing", 15_000, "the stall is called");
  const waiting = await signPayment(devPrivateKey(4), weather);
  const refused = await pay(gateway, "/weather", waiting);
  assert.equal(refused.status, 503);
  assert.match(JSON.parse(refused.body).message, /waited \d+ s for settlement/);
  await gateway.stop();

  gateway = await startTestGateway(env, { payTo, admin: true, settlement });
  try {
    await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === 1000n, 20_000, "settled once the cap allows");
    await eventually(async () => (await readiness(gateway)).status === 200, 10_000, "ready again");
    assert.equal((await pay(gateway, "/weather", waiting)).status, 200, "the refused payment was not used up");
  } finally {
    await gateway.stop();
  }
});
