// Hot reload through the real binary: an edited file (editor-style replace, or a
// Kubernetes ConfigMap symlink swap), SIGHUP and the admin call each swap the config in;
// a broken file changes nothing; quotes issued before a price change stay honoured until
// their maxTimeoutSeconds runs out, and nothing else is accepted.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, renameSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { devPrivateKey } from "../../deploy/devnet/devnet.mjs";
import { startChainAndUpstream, startTestGateway, startGateway, testConfig, freePort, freshAddress, eventually, sleep, b64, unb64, balanceOf, runCli } from "./harness.mjs";
import { hits } from "../../deploy/devnet/sample-upstream.mjs";
import { signPayment } from "./payments.mjs";

let env;

before(async () => {
  env = await startChainAndUpstream();
});

after(async () => {
  await env?.stop();
});

// A route whose quotes live 12 s, so the honoured window can run out within the test.
const QUOTED_ROUTE = (price) => `
  - name: quoted
    methods: [GET]
    path: /echo/quoted
    upstream: sample
    price: "${price}"
    max_timeout_seconds: 12
`;

/** Replaces the file the way editors do: write a new file beside it, rename it over. */
function replaceFile(path, text) {
  writeFileSync(path + ".tmp", text);
  renameSync(path + ".tmp", path);
}

async function offer(gateway, path = "/echo/quoted") {
  const res = await fetch(gateway.base + path);
  assert.equal(res.status, 402);
  return unb64(res.headers.get("payment-required")).accepts[0];
}

async function pay(gateway, requirements, tamper) {
  const payment = await signPayment(devPrivateKey(3), requirements, tamper);
  const res = await fetch(gateway.base + "/echo/quoted", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  const error = res.status === 402 ? unb64(res.headers.get("payment-required")).error : undefined;
  await res.arrayBuffer();
  return { status: res.status, error };
}

async function configHash(gateway) {
  return (await (await gateway.admin("/config")).json()).hash;
}

async function reloadedFrom(gateway, hash) {
  return eventually(async () => (await configHash(gateway)) !== hash, 10_000, "the gateway to load the edited file");
}

test("an edited file is reloaded; quotes from before the change are honoured until they expire, and only they", async () => {
  const gateway = await startTestGateway(env, {
    payTo: freshAddress(), admin: true, extraRoutes: QUOTED_ROUTE("$0.001"), payments: { settle_margin_seconds: 5 },
  });
  try {
    const oldOffer = await offer(gateway);
    assert.equal(oldOffer.amount, "1000");
    const hash = await configHash(gateway);
    const text = readFileSync(gateway.configPath, "utf8");
    replaceFile(gateway.configPath, text.replace(QUOTED_ROUTE("$0.001"), QUOTED_ROUTE("$0.002")));
    await reloadedFrom(gateway, hash);
    const newOffer = await offer(gateway);
    assert.equal(newOffer.amount, "2000", "new challenges carry the new price");

    // Quoted before the change: still accepted.
    assert.equal((await pay(gateway, oldOffer)).status, 200, "a payment for the previous quote is honoured");
    // Quoted under the new price: accepted.
    assert.equal((await pay(gateway, newOffer)).status, 200);
    // Matches neither quote: refused.
    const made_up = { ...oldOffer, amount: "1500" };
    const refused = await pay(gateway, made_up);
    assert.equal(refused.status, 402);
    assert.equal(refused.error, "invalid_payment_requirements");

    const routes = await (await gateway.admin("/routes")).json();
    const quoted = routes.routes.find((r) => r.name === "quoted");
    assert.equal(quoted.offers[0].amount, "2000");
    assert.equal(quoted.honoured.length, 1);
    assert.equal(quoted.honoured[0].offers[0].amount, "1000");

    // Once the old quote's maxTimeoutSeconds (12 s) has passed since the reload, it is over.
    await sleep((quoted.honoured[0].until - Math.floor(Date.now() / 1000) + 1) * 1000);
    const late = await pay(gateway, oldOffer);
    assert.equal(late.status, 402, "the old price is no longer honoured");
    assert.equal(late.error, "invalid_payment_requirements");
    assert.equal((await pay(gateway, newOffer)).status, 200);
  } finally {
    await gateway.stop();
  }
});

test("a broken file changes nothing: the old config keeps serving and the error is reported", async () => {
  const gateway = await startTestGateway(env, { payTo: freshAddress(), admin: true });
  try {
    const hash = await configHash(gateway);
    const text = readFileSync(gateway.configPath, "utf8");
    replaceFile(gateway.configPath, text.replace('price: "$0.001"\n    description', 'price: "$0.0000001"\n    description'));
    const status = await eventually(async () => {
      const body = await (await gateway.admin("/config")).json();
      return body.last_attempt && body;
    }, 10_000, "a reload attempt");
    assert.equal(status.last_attempt.ok, false);
    assert.equal(status.last_attempt.trigger, "file");
    assert.ok(status.last_attempt.error.includes(gateway.configPath), status.last_attempt.error);
    assert.match(status.last_attempt.error, /routes\[0\]: price "\$0\.0000001" has more decimal places.* at line \d+ column \d+/);
    assert.equal(status.hash, hash, "the serving config is unchanged");
    assert.equal((await offer(gateway, "/weather")).amount, "1000", "and so is the price");

    // The admin call says the same, with 422.
    const res = await gateway.admin("/reload", { method: "POST" });
    assert.equal(res.status, 422);
    const body = await res.json();
    assert.equal(body.error, "config_invalid");
    assert.match(body.message, /previous config keeps serving/);

    const metrics = await (await gateway.admin("/metrics")).text();
    assert.match(metrics, /x402_config_reloads_total\{outcome="failure"\} [1-9]/);
    assert.match(metrics, new RegExp(`x402_config_info\\{hash="${hash}"\\} 1`));
    assert.match(gateway.logs(), /config reload refused/);

    // Fixing the file applies it.
    replaceFile(gateway.configPath, text.replace('price: "$0.001"\n    description', 'price: "$0.005"\n    description'));
    await reloadedFrom(gateway, hash);
    assert.equal((await offer(gateway, "/weather")).amount, "5000");
  } finally {
    await gateway.stop();
  }
});

test("SIGHUP and POST /reload reload; a listener change is reported as needing a restart", async () => {
  // No watcher: only explicit triggers reload.
  const gateway = await startTestGateway(env, { payTo: freshAddress(), admin: true, watchConfig: false });
  try {
    const text = readFileSync(gateway.configPath, "utf8");
    const hash = await configHash(gateway);
    writeFileSync(gateway.configPath, text.replace('price: "$0.001"\n    description', 'price: "$0.002"\n    description'));
    await sleep(800);
    assert.equal(await configHash(gateway), hash, "no watcher: the edit waits for a trigger");
    gateway.child.kill("SIGHUP");
    await reloadedFrom(gateway, hash);
    assert.equal((await offer(gateway, "/weather")).amount, "2000");
    assert.equal(gateway.child.exitCode, null, "SIGHUP does not stop the gateway");
    assert.match(gateway.logs(), /trigger="?SIGHUP"?.*config reloaded|config reloaded.*SIGHUP/);

    const listenPort = Number(new URL(gateway.base).port);
    const otherPort = await freePort();
    writeFileSync(
      gateway.configPath,
      text.replace(`listen: 127.0.0.1:${listenPort}`, `listen: 127.0.0.1:${otherPort}`).replace('price: "$0.001"\n    description', 'price: "$0.003"\n    description'),
    );
    const res = await gateway.admin("/reload", { method: "POST" });
    assert.equal(res.status, 200);
    const outcome = await res.json();
    assert.equal(outcome.changed, true);
    assert.deepEqual(outcome.restart_required, ["server.listen"]);
    assert.equal((await offer(gateway, "/weather")).amount, "3000", "the rest of the file applied");
    assert.deepEqual((await (await gateway.admin("/config")).json()).restart_required, ["server.listen"]);
    assert.match(gateway.logs(), /apply only after a restart/);
    await assert.rejects(fetch(`http://127.0.0.1:${otherPort}/health`), "the new listener is not opened live");
  } finally {
    await gateway.stop();
  }
});

test("a Kubernetes-style ConfigMap update (symlink swap) is reloaded", async () => {
  const dir = mkdtempSync(join(tmpdir(), "x402-configmap-"));
  const listenPort = await freePort();
  const yaml = testConfig({
    listenPort, rpcUrl: env.devnet.url, upstreamPort: env.upstreamPort, deadPort: await freePort(), payTo: freshAddress(),
  });
  // The layout the kubelet makes: gateway.yaml -> ..data/gateway.yaml, ..data -> ..<version>.
  const version = (name, text) => {
    mkdirSync(join(dir, name));
    writeFileSync(join(dir, name, "gateway.yaml"), text);
  };
  version("..v1", yaml);
  symlinkSync("..v1", join(dir, "..data"));
  symlinkSync("..data/gateway.yaml", join(dir, "gateway.yaml"));
  const gateway = await startGateway(null, { listenPort, configPath: join(dir, "gateway.yaml") });
  try {
    assert.equal((await offer(gateway, "/weather")).amount, "1000");
    version("..v2", yaml.replace('price: "$0.001"\n    description', 'price: "$0.004"\n    description'));
    symlinkSync("..v2", join(dir, "..data_tmp"));
    renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
    await eventually(async () => (await offer(gateway, "/weather")).amount === "4000", 10_000, "the swapped ConfigMap to apply");
  } finally {
    await gateway.stop();
  }
});

test("a request in flight finishes on the config it started with", async () => {
  const slowRoute = (upstream) => `
  - name: slow
    path: /slow
    upstream: ${upstream}
    free: true
`;
  const gateway = await startTestGateway(env, { payTo: freshAddress(), admin: true, extraRoutes: slowRoute("sample") });
  try {
    const hash = await configHash(gateway);
    const inFlight = fetch(gateway.base + "/slow?ms=1500");
    await sleep(200);
    const text = readFileSync(gateway.configPath, "utf8");
    replaceFile(gateway.configPath, text.replace(slowRoute("sample"), slowRoute("dead")));
    await reloadedFrom(gateway, hash);
    const fresh = await fetch(gateway.base + "/slow?ms=10");
    assert.equal(fresh.status, 502, "new requests follow the new config (the dead upstream)");
    await fresh.arrayBuffer();
    const finished = await inFlight;
    assert.equal(finished.status, 200, "the request that started before the reload completes through the old upstream");
    await finished.arrayBuffer();
  } finally {
    await gateway.stop();
  }
});

// The attack on quotes honoured across a reload: a payment signed for a cheap route is sent
// to a path that a reload has made expensive, by a new route placed above the cheap one
// under the cheap one's old name. Honoured quotes follow a route's match, not its name.
test("a reload that puts an expensive route above a cheap one: the cheap quote is refused on the expensive path", async () => {
  const cheap = `
  - name: reports
    methods: [GET]
    path: /echo/reports/*
    upstream: sample
    price: "$0.001"
`;
  const expensiveAbove = `
  - name: reports
    methods: [GET]
    path: /echo/reports/premium
    upstream: sample
    price: "$1"
  - name: reports-basic
    methods: [GET]
    path: /echo/reports/*
    upstream: sample
    price: "$0.001"
`;
  const payTo = freshAddress();
  const gateway = await startTestGateway(env, { payTo, admin: true, extraRoutes: cheap, settlement: { max_wait_ms: 100 } });
  try {
    const cheapOffer = await offer(gateway, "/echo/reports/premium");
    assert.equal(cheapOffer.amount, "1000", "before the reload the whole prefix is cheap");
    const payment = b64(await signPayment(devPrivateKey(3), cheapOffer));

    const hash = await configHash(gateway);
    replaceFile(gateway.configPath, readFileSync(gateway.configPath, "utf8").replace(cheap, expensiveAbove));
    await reloadedFrom(gateway, hash);
    assert.equal((await offer(gateway, "/echo/reports/premium")).amount, "1000000", "the path is expensive now");

    const upstreamCalls = hits.get("/echo/reports/premium") ?? 0;
    const refused = await fetch(gateway.base + "/echo/reports/premium", { headers: { "PAYMENT-SIGNATURE": payment } });
    await refused.arrayBuffer();
    assert.equal(refused.status, 402, "the cheap quote does not buy the expensive path");
    assert.equal(unb64(refused.headers.get("payment-required")).accepts[0].amount, "1000000");
    assert.equal(hits.get("/echo/reports/premium") ?? 0, upstreamCalls, "the upstream was not called");
    const journaled = JSON.parse(runCli(["payments", "--journal", join(dirname(gateway.configPath), "x402-journal.db"), "summary"]).stdout);
    assert.deepEqual(journaled, {}, "nothing was charged");

    // The same payment is still good where it was quoted, and is charged exactly once there.
    const served = await fetch(gateway.base + "/echo/reports/basic", { headers: { "PAYMENT-SIGNATURE": payment } });
    await served.arrayBuffer();
    assert.equal(served.status, 200, "the cheap route still takes its own price");
    await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === 1000n, 20_000, "the cheap payment to settle");
    assert.equal(await balanceOf(env.devnet.url, payTo), 1000n, "payTo received the cheap price once, nothing for the refused request");
  } finally {
    await gateway.stop();
  }
});
