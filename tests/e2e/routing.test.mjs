// Routing through the real binary: unmatched requests (404 or forward), and an upstream
// pool that fails over when one of its servers is down.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startChainAndUpstream, startGateway, freePort } from "./harness.mjs";

let env;

before(async () => {
  env = await startChainAndUpstream();
});

after(async () => {
  await env?.stop();
});

async function gatewayWith(unmatched) {
  const listenPort = await freePort();
  const deadPort = await freePort();
  const yaml = `
server: { listen: "127.0.0.1:${listenPort}", threads: 1, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
admin: { listen: null }
networks: { base-sepolia: { rpc_url: "${env.devnet.url}" } }
payments: { pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" }
upstreams:
  sample: { addresses: ["127.0.0.1:${env.upstreamPort}"] }
  pair: { addresses: ["127.0.0.1:${deadPort}", "127.0.0.1:${env.upstreamPort}"], connect_timeout_ms: 500 }
  impatient: { addresses: ["127.0.0.1:${env.upstreamPort}"], read_timeout_ms: 300 }
routes:
  - { path: /health, upstream: sample, free: true }
  - { path: /slow, upstream: impatient, free: true }
  - { path: /echo/*, upstream: pair, free: true }
  - { methods: [GET], path: /weather, upstream: sample, price: "$0.001" }
unmatched: ${unmatched}
`;
  return startGateway(yaml, { listenPort });
}

test("unmatched requests get 404 by default", async () => {
  const gateway = await gatewayWith("{ action: not_found }");
  try {
    const res = await fetch(gateway.base + "/echo");
    assert.equal(res.status, 404);
    assert.equal((await res.json()).error, "not_found");
    assert.equal((await fetch(gateway.base + "/weather", { method: "POST" })).status, 404, "method is part of the match");
  } finally {
    await gateway.stop();
  }
});

test("unmatched requests are forwarded free when the operator says so", async () => {
  const gateway = await gatewayWith("{ action: forward, upstream: sample }");
  try {
    const res = await fetch(gateway.base + "/echo?x=1");
    assert.equal(res.status, 200);
    const echo = await res.json();
    assert.equal(echo.path, "/echo");
    assert.equal(echo.query, "?x=1");
  } finally {
    await gateway.stop();
  }
});

test("a pool with a dead server keeps answering through the live one", async () => {
  const gateway = await gatewayWith("{ action: not_found }");
  try {
    for (let i = 0; i < 6; i++) {
      const res = await fetch(gateway.base + `/echo/${i}`);
      assert.equal(res.status, 200, `request ${i}`);
      assert.equal((await res.json()).path, `/echo/${i}`);
    }
  } finally {
    await gateway.stop();
  }
});

test("an upstream slower than read_timeout_ms gets 504 with a reason, and a fast one still answers", async () => {
  const gateway = await gatewayWith("{ action: not_found }");
  try {
    const started = Date.now();
    const slow = await fetch(gateway.base + "/slow?ms=3000");
    assert.equal(slow.status, 504);
    assert.equal((await slow.json()).error, "upstream_timeout");
    assert.ok(Date.now() - started < 2500, "the gateway gave up at its read timeout, not the upstream's pace");
    const fast = await fetch(gateway.base + "/slow?ms=10");
    assert.equal(fast.status, 200);
    assert.deepEqual(await fast.json(), { slow: true });
  } finally {
    await gateway.stop();
  }
});
