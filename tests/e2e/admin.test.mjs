// The admin API and observability through the real binary: bearer-token protection,
// probes, Prometheus metrics that follow a paid request to its settlement, settlement and
// exposure views, unblocking a payer, draining, and one JSON access log line per request
// with a request id that reaches the upstream.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { privateKeyToAccount } from "viem/accounts";
import { devPrivateKey } from "../../deploy/devnet/devnet.mjs";
import { startChainAndUpstream, startTestGateway, freshAddress, eventually, b64, unb64, ADMIN_TOKEN } from "./harness.mjs";
import { signPayment } from "./payments.mjs";

let env;
let gateway;
const payTo = freshAddress();

before(async () => {
  env = await startChainAndUpstream();
  gateway = await startTestGateway(env, {
    payTo,
    admin: true,
    // Batches wait for the drain (or a minute): the queue is there to be seen.
    settlement: { max_wait_ms: 60_000 },
    gatewayEnv: { X402_LOG_FORMAT: "json" },
    // Off, so an unfunded payer is served on credit, fails to settle and earns a block to list.
    extraYaml: "exposure: { balance_check: false }\n",
    extraRoutes: `
  - name: premium
    methods: [GET]
    path: /echo/premium
    upstream: sample
    price: "$0.01"
    settle: before
`,
  });
});

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway?.logs());
  await gateway?.stop();
  await env?.stop();
});

async function adminJson(path, init) {
  const res = await gateway.admin(path, init);
  return { status: res.status, body: await res.json() };
}

/** The value of one sample in Prometheus text, or 0 when absent. */
function sample(text, name, labels = {}) {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split("\n")) {
    if (!line.startsWith(name + "{") && !line.startsWith(name + " ")) continue;
    if (wanted.every((pair) => line.includes(pair))) return Number(line.split(" ").pop());
  }
  return 0;
}

async function metrics() {
  return (await gateway.admin("/metrics")).text();
}

async function payWeather(key, requestId) {
  const accepts = unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
  const headers = { "PAYMENT-SIGNATURE": b64(await signPayment(key, accepts)) };
  if (requestId) headers["X-Request-Id"] = requestId;
  const res = await fetch(gateway.base + "/weather", { headers });
  await res.arrayBuffer();
  return res;
}

test("probes answer without a token; everything else needs the bearer token", async () => {
  for (const path of ["/health", "/ready"]) {
    const res = await fetch(gateway.adminBase + path);
    assert.equal(res.status, 200, path);
    await res.arrayBuffer();
  }
  for (const path of ["/metrics", "/config", "/routes", "/settlement", "/exposure"]) {
    const none = await fetch(gateway.adminBase + path);
    assert.equal(none.status, 401, path);
    assert.equal((await none.json()).error, "unauthorized");
    const wrong = await fetch(gateway.adminBase + path, { headers: { authorization: `Bearer ${ADMIN_TOKEN}x` } });
    assert.equal(wrong.status, 401, path);
    await wrong.arrayBuffer();
  }
  const post = await fetch(gateway.adminBase + "/reload", { method: "POST" });
  assert.equal(post.status, 401);
  await post.arrayBuffer();
  assert.equal((await adminJson("/nope")).status, 404);
});

test("a short or placeholder admin token refuses to start, naming the setting", async () => {
  const refusals = [
    ["short-admin-token", /X402_ADMIN_TOKEN \(admin\.token_env\) is 17 bytes; use at least 32/],
    ["replace-with-a-long-random-token", /X402_ADMIN_TOKEN \(admin\.token_env\) is the example value shipped/],
  ];
  for (const [token, message] of refusals) {
    await assert.rejects(
      startTestGateway(env, { payTo: freshAddress(), admin: true, gatewayEnv: { X402_ADMIN_TOKEN: token } }),
      (error) => {
        assert.match(error.message, /gateway exited early \(1\)/, "it exits with an error, it does not serve");
        assert.match(error.message, message);
        return true;
      },
      `token ${JSON.stringify(token)} is refused`,
    );
  }
});

test("without a token in the environment the admin API is locked (fails closed)", async () => {
  const locked = await startTestGateway(env, { payTo, admin: true, gatewayEnv: { X402_ADMIN_TOKEN: "" } });
  try {
    assert.equal((await fetch(locked.adminBase + "/health")).status, 200);
    const res = await locked.admin("/config");
    assert.equal(res.status, 403);
    const body = await res.json();
    assert.equal(body.error, "admin_token_unset");
    assert.match(body.message, /X402_ADMIN_TOKEN/);
  } finally {
    await locked.stop();
  }
});

test("metrics, settlement and exposure follow a paid request from challenge to settlement; drain flushes it", async () => {
  const key = devPrivateKey(4);
  const payer = privateKeyToAccount(key).address;
  const before = await metrics();
  assert.equal((await payWeather(key)).status, 200);

  // A request is counted when its access line is written, just after the response is sent.
  const after = await eventually(async () => {
    const text = await metrics();
    return sample(text, "x402_requests_total", { route: "weather", status: "200" }) === 1 && text;
  }, 5_000, "the paid request to be counted");
  assert.equal(sample(after, "x402_challenges_total", { route: "weather" }) - sample(before, "x402_challenges_total", { route: "weather" }), 1);
  assert.equal(sample(after, "x402_payments_verified_total", { route: "weather" }), 1);
  assert.equal(sample(after, "x402_requests_total", { route: "weather", status: "200" }), 1);
  assert.equal(sample(after, "x402_requests_total", { route: "weather", status: "402" }) >= 1, true);
  assert.equal(sample(after, "x402_value_accepted_atomic_total", { route: "weather", network: "eip155:84532" }), 1000);
  assert.equal(sample(after, "x402_settlement_queue_depth"), 1);
  assert.equal(sample(after, "x402_exposure_usd_micros", { route: "weather" }), 1000);
  assert.ok(sample(after, "x402_upstream_latency_seconds_count", { route: "weather" }) >= 1);
  assert.match(after, /x402_config_info\{hash="[0-9a-f]{16}"\} 1/);

  // A replayed payment is counted by reason.
  const accepts = unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
  const payment = b64(await signPayment(key, accepts));
  for (let i = 0; i < 2; i++) await (await fetch(gateway.base + "/weather", { headers: { "PAYMENT-SIGNATURE": payment } })).arrayBuffer();
  const replayed = await metrics();
  assert.equal(sample(replayed, "x402_replay_rejections_total", { route: "weather" }), 1);
  assert.equal(sample(replayed, "x402_payments_rejected_total", { route: "weather", reason: "invalid_exact_evm_nonce_already_used" }), 1);

  const settlement = await adminJson("/settlement");
  assert.equal(settlement.body.unsettled, 2);
  assert.equal(settlement.body.states.accepted, 2);
  assert.equal(typeof settlement.body.oldestUnsettledAgeSeconds, "number");
  const exposure = await adminJson("/exposure");
  assert.equal(exposure.body.totalUsdMicros, 2000);
  assert.deepEqual(exposure.body.topPayers, [{ payer, usdMicros: 2000 }]);
  assert.equal(exposure.body.limitsUsdMicros.perPayer, 1_000_000);

  // Drain: not ready any more, and the queue goes out without waiting for the batch window.
  const drained = await adminJson("/drain", { method: "POST" });
  assert.equal(drained.status, 200);
  assert.equal(drained.body.draining, true);
  const ready = await fetch(gateway.adminBase + "/ready");
  assert.equal(ready.status, 503);
  assert.equal((await ready.json()).reason, "draining");
  await eventually(async () => (await adminJson("/settlement")).body.unsettled === 0, 20_000, "the drain to settle the queue");
  // The settler counts a payment just after the journal records it settled.
  const settled = await eventually(async () => {
    const text = await metrics();
    return sample(text, "x402_settlement_payments_total", { state: "settled" }) === 2 && text;
  }, 5_000, "the settled payments to be counted");
  assert.equal(sample(settled, "x402_value_settled_atomic_total", { route: "weather" }), 2000);
  assert.equal(sample(settled, "x402_settlement_payments_total", { state: "settled" }), 2);
  assert.ok(sample(settled, "x402_settlement_batches_total", { outcome: "mined" }) >= 1);
  assert.ok(sample(settled, "x402_settlement_gas_used_total") > 0);
  assert.equal(sample(settled, "x402_settlement_queue_depth"), 0);
  await eventually(async () => (await adminJson("/exposure")).body.totalUsdMicros === 0, 5_000, "the exposure to be released");
  // The gateway still serves while draining: the load balancer moves traffic away.
  assert.equal((await fetch(gateway.base + "/health")).status, 200);
});

test("a payer blocked after a failed settlement is listed and can be unblocked", async () => {
  const key = "0x" + randomBytes(32).toString("hex"); // holds no tokens
  const payer = privateKeyToAccount(key).address;
  const accepts = unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
  const pay = async () => {
    const res = await fetch(gateway.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(await signPayment(key, accepts)) } });
    const body = await res.text();
    return { status: res.status, message: res.status === 200 ? "" : JSON.parse(body).message };
  };
  // The balance check is off here: the unfunded payer is served on credit, and its
  // settlement (flushed at once since the drain above) fails.
  assert.equal((await pay()).status, 200);
  const listed = await eventually(async () => {
    const body = (await adminJson("/exposure")).body;
    return body.blocked.length > 0 && body;
  }, 20_000, "the payer is blocked");
  assert.deepEqual(listed.blocked.map((b) => b.payer), [payer]);
  assert.match(listed.blocked[0].reason, /exceeds balance/);

  const refused = await pay();
  assert.equal(refused.status, 402);
  assert.match(refused.message, /refused until/);

  const cleared = await adminJson(`/exposure/blocks/${payer}`, { method: "DELETE" });
  assert.equal(cleared.status, 200);
  assert.equal(cleared.body.wasBlocked, true);
  assert.deepEqual((await adminJson("/exposure")).body.blocked, []);
  // Judged again on its merits: no longer refused up front.
  assert.equal((await pay()).status, 200);
});

test("one JSON access line per request; X-Request-Id is kept or made, sent upstream and returned", async () => {
  const given = "req-" + randomBytes(6).toString("hex");
  const echoed = await fetch(gateway.base + "/echo/anything", { headers: { "X-Request-Id": given } });
  assert.equal(echoed.headers.get("x-request-id"), given);
  assert.equal((await echoed.json()).headers["x-request-id"], given, "the upstream sees the client's id");

  const made = await fetch(gateway.base + "/echo/other");
  const madeId = made.headers.get("x-request-id");
  assert.match(madeId, /^[0-9a-f]{12}-[0-9a-f]+$/);
  assert.equal((await made.json()).headers["x-request-id"], madeId);

  const unsafe = await fetch(gateway.base + "/echo/x", { headers: { "X-Request-Id": "has space\"quote" } });
  assert.notEqual(unsafe.headers.get("x-request-id"), "has space\"quote", "an unusable id is replaced");
  await unsafe.arrayBuffer();

  const challenged = await fetch(gateway.base + "/weather", { headers: { "X-Request-Id": given + "-402" } });
  assert.equal(challenged.headers.get("x-request-id"), given + "-402", "local answers carry the id too");
  await challenged.arrayBuffer();

  const paidId = given + "-paid";
  assert.equal((await payWeather(devPrivateKey(5), paidId)).status, 200);

  const lines = await eventually(() => {
    const access = gateway.logs().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).filter((l) => l.target === "access");
    return access.some((l) => l.request_id === paidId) && access;
  }, 5_000, "the access lines");
  const line = (id) => lines.filter((l) => l.request_id === id);
  assert.equal(line(given).length, 1, "one line per request");
  const free = line(given)[0];
  assert.equal(free.route, "free");
  assert.equal(free.upstream, "sample");
  assert.equal(free.status, 200);
  assert.equal(free.path, "/echo/anything");
  assert.equal(free.payment, "none");
  assert.ok(free.bytes_sent > 0 && free.latency_us > 0);
  assert.equal(line(given + "-402")[0].payment, "challenged");
  assert.equal(line(given + "-402")[0].status, 402);
  const paid = line(paidId)[0];
  assert.equal(paid.payment, "charged");
  assert.equal(paid.payer, privateKeyToAccount(devPrivateKey(5)).address);
  assert.equal(paid.amount, "1000");
  assert.equal(paid.route, "weather");
});
