// End-to-end harness: a real dev chain (anvil), the sample upstream, and the real
// x402-gateway binary over TCP, on fresh loopback ports.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { encodeFunctionData, decodeFunctionResult } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { startDevnet, devPrivateKey, rpc, USDC_ADDRESS, TEST_USDC_ABI } from "../../deploy/devnet/devnet.mjs";
export { balanceOf } from "../../deploy/devnet/devnet.mjs";
import { startSampleUpstream } from "../../deploy/devnet/sample-upstream.mjs";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const GATEWAY_BIN = process.env.X402_GATEWAY_BIN ?? join(ROOT, "target/debug/x402-gateway");

export async function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function startChainAndUpstream() {
  const chainPort = await freePort();
  const upstreamPort = await freePort();
  const devnet = await startDevnet({ port: chainPort });
  const upstream = await startSampleUpstream({ port: upstreamPort });
  return {
    devnet,
    upstream,
    upstreamPort,
    async stop() {
      upstream.closeAllConnections?.();
      await new Promise((r) => upstream.close(r));
      await devnet.stop();
    },
  };
}

/** A gateway config for tests: YAML text from the given ports and routes. */
export function testConfig({ listenPort, adminPort, watchConfig = true, rpcUrl, rpcUrls, upstreamPort, deadPort, payTo, extraRoutes = "", settlement = {}, payments = {}, server = {} }) {
  const s = { max_wait_ms: 200, drain_timeout_seconds: 30, ...settlement };
  const settlementYaml = Object.entries(s).map(([key, value]) => `  ${key}: ${JSON.stringify(value)}`).join("\n");
  // The grace period is what requests in flight get at shutdown, at most: a stop waits for
  // none when nothing is in flight.
  const serverSettings = { threads: 2, grace_period_seconds: 5, graceful_shutdown_timeout_seconds: 2, ...server };
  return `
server:
  listen: 127.0.0.1:${listenPort}
${Object.entries(serverSettings).map(([key, value]) => `  ${key}: ${JSON.stringify(value)}\n`).join("")}admin:
  listen: ${adminPort ? `"127.0.0.1:${adminPort}"` : "null"}
  watch_config: ${watchConfig}
networks:
  base-sepolia:
    rpc_urls: ${JSON.stringify(rpcUrls ?? [rpcUrl])}
payments:
  pay_to: "${payTo}"
${Object.entries(payments).map(([key, value]) => `  ${key}: ${JSON.stringify(value)}\n`).join("")}settlement:
${settlementYaml}
upstreams:
  sample:
    addresses: ["127.0.0.1:${upstreamPort}"]
  dead:
    addresses: ["127.0.0.1:${deadPort}"]
    connect_timeout_ms: 500
routes:
${extraRoutes}
  - name: weather
    methods: [GET]
    path: /weather
    upstream: sample
    price: "$0.001"
    description: Current weather
    mime_type: application/json
  - name: status
    path: /status/{code}
    upstream: sample
    price: "$0.001"
  - name: dead
    path: /dead
    upstream: dead
    price: "$0.001"
  - name: free
    path: /*
    upstream: sample
    free: true
`;
}

/** A `settle: before` route named premium, priced $0.01, for `extraRoutes`. */
export function settleBeforeRoute(path) {
  return `
  - name: premium
    methods: [GET]
    path: ${path}
    upstream: sample
    price: "$0.01"
    settle: before
`;
}

/** A payTo address no other test or account touches, so its balance is the test's to read. */
export function freshAddress() {
  return privateKeyToAccount("0x" + randomBytes(32).toString("hex")).address;
}

/** The bearer token test gateways with an admin listener get (at least 32 bytes, or the gateway refuses it). */
export const ADMIN_TOKEN = "test-admin-token-0123456789abcdef";

/**
 * Starts the binary with `testConfig` on fresh ports against `env`, plus `extraYaml`.
 * `admin: true` opens the admin listener (token `ADMIN_TOKEN`); the gateway then has
 * `admin(path, init)`, a fetch against it with the token.
 */
export async function startTestGateway(env, { payTo, settlement, extraRoutes, extraYaml = "", rpcUrls, admin = false, watchConfig = true, gatewayEnv = {}, payments, server, listenPort }) {
  listenPort ??= await freePort();
  const adminPort = admin ? await freePort() : undefined;
  const yaml = testConfig({
    listenPort, adminPort, watchConfig, rpcUrl: env.devnet.url, rpcUrls, upstreamPort: env.upstreamPort, deadPort: await freePort(), payTo, settlement, extraRoutes, payments, server,
  }) + extraYaml;
  const gateway = await startGateway(yaml, { listenPort, env: { X402_ADMIN_TOKEN: ADMIN_TOKEN, ...gatewayEnv } });
  if (adminPort) {
    gateway.adminBase = `http://127.0.0.1:${adminPort}`;
    gateway.admin = (path, init = {}) =>
      fetch(gateway.adminBase + path, { ...init, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...init.headers } });
  }
  return gateway;
}

/**
 * Starts the real binary and waits until it answers on its port. The config is `yaml`,
 * written to a fresh folder, or the file at `configPath` as it is.
 */
export async function startGateway(yaml, { env = {}, listenPort, configPath } = {}) {
  if (!configPath) {
    configPath = join(mkdtempSync(join(tmpdir(), "x402-gateway-test-")), "gateway.yaml");
    writeFileSync(configPath, yaml);
  }
  const child = spawn(GATEWAY_BIN, ["run", "--config", configPath], {
    env: { ...process.env, X402_SETTLEMENT_KEY: devPrivateKey(0), X402_LOG: "info", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise((r) => child.once("exit", (code, signal) => r({ code, signal })));
  const base = `http://127.0.0.1:${listenPort}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`gateway exited early (${child.exitCode}):\n${stderr}`);
    try {
      // Our own binary answers this unmatched-free path through its route table.
      const res = await fetch(`${base}/health`);
      if (res.ok && child.exitCode === null) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`gateway did not answer on ${base}:\n${stderr}`);
    await sleep(50);
  }
  return {
    base,
    configPath,
    child,
    exited,
    logs: () => stderr,
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null) child.kill(signal);
      return exited;
    },
  };
}

/**
 * A TCP relay on a loopback port to `targetPort` that can be taken down (every connection
 * cut, nothing listening) and brought back on the same port: an RPC node going away.
 */
export async function startRelay(targetPort) {
  const sockets = new Set();
  let server = null;
  const port = await freePort();
  async function up() {
    if (server) return;
    server = createServer((client) => {
      const upstream = connect(targetPort, "127.0.0.1");
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
        s.on("error", () => {});
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", resolve);
    });
  }
  async function down() {
    if (!server) return;
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
    server = null;
  }
  await up();
  return { url: `http://127.0.0.1:${port}`, up, down };
}

/** Runs the binary with `args` to completion (CLI commands). */
export function runCli(args, extraEnv = {}) {
  return spawnSync(GATEWAY_BIN, args, { encoding: "utf8", env: { ...process.env, ...extraEnv }, timeout: 20_000 });
}

export async function authorizationState(rpcUrl, authorizer, nonce) {
  const data = encodeFunctionData({ abi: TEST_USDC_ABI, functionName: "authorizationState", args: [authorizer, nonce] });
  const result = await rpc(rpcUrl, "eth_call", [{ to: USDC_ADDRESS, data }, "latest"]);
  return decodeFunctionResult({ abi: TEST_USDC_ABI, functionName: "authorizationState", data: result });
}

/** Polls `check` until it returns truthy or `ms` passes. */
export async function eventually(check, ms = 15_000, what = "condition") {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

export const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64");
export const unb64 = (text) => JSON.parse(Buffer.from(text, "base64").toString("utf8"));
