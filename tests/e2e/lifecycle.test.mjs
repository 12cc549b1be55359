// The binary's life: validate, refusing to start on bad input, and draining accepted
// payments to the chain on SIGTERM and SIGINT.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { devPrivateKey, devAccount } from "../../deploy/devnet/devnet.mjs";
import { signPayment } from "./payments.mjs";
import { payingFetch } from "../../deploy/devnet/pay.mjs";
import {
  ROOT, runCli, startChainAndUpstream, startGateway, testConfig, freePort, authorizationState, balanceOf, b64, unb64,
} from "./harness.mjs";

let env;

before(async () => {
  env = await startChainAndUpstream();
});

after(async () => {
  await env?.stop();
});

function writeTemp(text) {
  const path = join(mkdtempSync(join(tmpdir(), "x402-gateway-cli-")), "gateway.yaml");
  writeFileSync(path, text);
  return path;
}

async function configFor(overrides = {}) {
  const listenPort = await freePort();
  const yaml = testConfig({
    listenPort, rpcUrl: env.devnet.url, upstreamPort: env.upstreamPort, deadPort: await freePort(),
    payTo: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", ...overrides,
  });
  return { listenPort, yaml };
}

test("validate accepts the shipped gateway.yaml", () => {
  const result = runCli(["validate", "--config", join(ROOT, "gateway.yaml")]);
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stdout, /gateway\.yaml: ok \(3 routes, 2 priced/);
});

test("validate names file, line and field of an error, and exits non-zero", async () => {
  const { yaml } = await configFor();
  const path = writeTemp(yaml.replace('price: "$0.001"\n    description', 'price: "$0.0000001"\n    description'));
  const result = runCli(["validate", "--config", path]);
  assert.equal(result.status, 1);
  assert.ok(result.stderr.includes(path), result.stderr);
  assert.match(result.stderr, /routes\[0\]: price "\$0\.0000001" has more decimal places than the asset's 6 at line \d+ column \d+/);
  const broken = runCli(["validate", "--config", writeTemp("routes: [\n")]);
  assert.equal(broken.status, 1);
  assert.match(broken.stderr, /line \d+ column \d+/);
  const missing = runCli(["validate", "--config", "/nonexistent/gateway.yaml"]);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /cannot read/);
});

test("every command has --help", () => {
  const commands = ["run", "validate", "routes", "quote", "payments", "payments list", "payments unblock", "channels"];
  for (const args of [["--help"], ...commands.map((c) => [...c.split(" "), "--help"])]) {
    const result = runCli(args);
    assert.equal(result.status, 0, args.join(" "));
    assert.match(result.stdout, /Usage: x402-gateway/);
  }
});

test("routes prints the resolved table with prices in dollars and atomic units", () => {
  const result = runCli(["routes", "--config", join(ROOT, "gateway.yaml")]);
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stdout, /weather\s+GET\s+\*\s+\/weather\s+-> sample/);
  assert.match(result.stdout, /\$0\.001 = 1000 atomic USDC \(0x036CbD53842c5426634e7929541eC2318f3dCF7e\) on base-sepolia \(eip155:84532\), pay to 0x70997970C51812dc3A010C7d01b50e0d17dc79C8/);
  assert.match(result.stdout, /settle: batched; billable statuses: 2xx, 3xx/);
  assert.match(result.stdout, /metered\s+GET\s+\*\s+\/echo\/\{name\}\s+-> sample\n\s+\$0\.001 = 1000 atomic USDC per request, batch-settlement channel on base-sepolia \(eip155:84532\), pay to 0x70997970C51812dc3A010C7d01b50e0d17dc79C8; withdraw delay 900 s, minimum deposit 100000 atomic/);
  assert.match(result.stdout, /health\s+GET[^\n]*\n\s+free/);
  assert.match(result.stdout, /unmatched: 404/);
});

test("quote prints exactly the 402 a running gateway sends, and says what free or unmatched requests get", async () => {
  const { listenPort, yaml } = await configFor();
  const path = writeTemp(yaml);
  const gateway = await startGateway(yaml, { listenPort });
  try {
    const url = `${gateway.base}/weather`;
    const live = await fetch(url);
    const quoted = runCli(["quote", "--config", path, "GET", url]);
    assert.equal(quoted.status, 0, quoted.stderr);
    assert.match(quoted.stdout, /^route weather\nHTTP\/1\.1 402\n/);
    assert.equal(quoted.stdout.match(/^PAYMENT-REQUIRED: (.*)$/m)[1], live.headers.get("payment-required"), "byte for byte");
    assert.ok(quoted.stdout.endsWith(`\n${await live.text()}\n`), "the same v1 body");
  } finally {
    await gateway.stop();
  }
  assert.match(runCli(["quote", "--config", path, "GET", "http://127.0.0.1/anything"]).stdout, /route free: free, forwarded to upstream sample/);
  const bad = runCli(["quote", "--config", path, "GET", "/weather"]);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /give the full URL/);
});

test("run refuses to start without the settlement key, naming the variable", async () => {
  const { yaml } = await configFor();
  const result = runCli(["run", "--config", writeTemp(yaml)], { X402_SETTLEMENT_KEY: "" });
  assert.equal(result.status, 1);
  assert.match(result.stderr, /X402_SETTLEMENT_KEY/);
  const bad = runCli(["run", "--config", writeTemp(yaml)], { X402_SETTLEMENT_KEY: "0x1234" });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /not a valid private key/);
});

test("run refuses a listen address that is taken instead of waiting for it", async () => {
  const blocker = createServer();
  const port = await new Promise((r) => blocker.listen(0, "127.0.0.1", () => r(blocker.address().port)));
  try {
    const { yaml } = await configFor({ listenPort: port });
    const result = runCli(["run", "--config", writeTemp(yaml)], { X402_SETTLEMENT_KEY: devPrivateKey(0) });
    assert.equal(result.status, 1);
    assert.match(result.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}`));
  } finally {
    blocker.close();
  }
});

for (const [signal, officialPayer, handPayer] of [["SIGTERM", 2, 4], ["SIGINT", 3, 5]]) {
  test(`${signal} drains accepted payments to the chain before exiting`, async () => {
    // A batch window far longer than the test: only the shutdown drain can settle these.
    const { listenPort, yaml } = await configFor({ settlement: { max_wait_ms: 600_000 } });
    const gateway = await startGateway(yaml, { listenPort });
    const payer = devAccount(officialPayer).address;
    const before = await balanceOf(env.devnet.url, payer);
    const pay = payingFetch(devPrivateKey(officialPayer));
    for (let i = 0; i < 3; i++) {
      const res = await pay(gateway.base + "/weather");
      assert.equal(res.status, 200);
      assert.equal(unb64(res.headers.get("payment-response")).success, true);
    }
    const challenge = await fetch(gateway.base + "/weather");
    const accepts = unb64(challenge.headers.get("payment-required")).accepts[0];
    const signed = [];
    for (let i = 0; i < 2; i++) {
      const payment = await signPayment(devPrivateKey(handPayer), accepts);
      const res = await fetch(gateway.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
      assert.equal(res.status, 200);
      signed.push(payment.payload.authorization);
    }
    assert.equal(await balanceOf(env.devnet.url, payer), before, "nothing settled before shutdown");
    for (const { from, nonce } of signed) {
      assert.equal(await authorizationState(env.devnet.url, from, nonce), false);
    }
    const { code } = await gateway.stop(signal);
    assert.equal(code, 0, gateway.logs());
    assert.equal(await balanceOf(env.devnet.url, payer), before - 3000n, "all three official payments settled");
    for (const { from, nonce } of signed) {
      assert.equal(await authorizationState(env.devnet.url, from, nonce), true, "settled by the drain");
    }
  });
}
