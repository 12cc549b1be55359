// Gateway replicas sharing a Redis store, for the replica tests: each replica a real binary
// with its own journal and settlement key; private redis-servers to kill; slow relays.
import { before, after } from "node:test";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { devPrivateKey } from "../../deploy/devnet/devnet.mjs";
import { startChainAndUpstream, startTestGateway, freePort, eventually, b64, unb64, GATEWAY_BIN } from "./harness.mjs";

export const MACHINE_REDIS = "redis://127.0.0.1:6379/0";

/** A `store:` block on a fresh key prefix. A generous timeout by default: a busy test machine must not read as an outage. */
export function storeYaml(url, { timeoutMs = 1000, prefix = `x402-test-${randomBytes(6).toString("hex")}`, extra = "" } = {}) {
  return `store:\n  kind: redis\n  url: "${url}"\n  key_prefix: "${prefix}"\n  timeout_ms: ${timeoutMs}\n${extra}`;
}

/**
 * A test file's dev chain, sample upstream and replica fleet, set up before its tests and
 * stopped after them: `suite.env`, `suite.fleet`.
 */
export function replicaSuite() {
  const suite = {};
  before(async () => {
    suite.env = await startChainAndUpstream();
    suite.fleet = replicaFleet(suite.env);
  });
  after(async () => {
    await suite.fleet?.stopAll();
    await suite.env?.stop();
  });
  return suite;
}

/** Starts replicas of one fleet; `stopAll` stops every one it started. */
export function replicaFleet(env) {
  const running = [];
  async function startReplica({ payTo, store, settlementKey, exposureYaml = "", settlement = {}, extraRoutes, gatewayEnv = {} }) {
    const journal = join(mkdtempSync(join(tmpdir(), "x402-replica-")), "journal.db");
    const listenPort = await freePort();
    const gateway = await startTestGateway(env, {
      payTo,
      admin: true,
      listenPort,
      settlement: { journal_path: journal, ...settlement },
      // Where the other replicas forward receipt look-ups for the payments this one takes.
      extraYaml: `${store}  advertise_url: "http://127.0.0.1:${listenPort}"\n${exposureYaml}`,
      extraRoutes,
      gatewayEnv: { X402_SETTLEMENT_KEY: settlementKey, ...gatewayEnv },
    });
    running.push(() => gateway.stop());
    gateway.journal = journal;
    return gateway;
  }
  /** Two replicas (settlement keys of dev accounts 0 and 9) sharing one key prefix. */
  async function startPair({ payTo, exposureYaml, settlement, url = MACHINE_REDIS }) {
    const store = storeYaml(url);
    const a = await startReplica({ payTo, store, settlementKey: devPrivateKey(0), exposureYaml, settlement });
    const b = await startReplica({ payTo, store, settlementKey: devPrivateKey(9), exposureYaml, settlement });
    return [a, b];
  }
  return {
    startReplica,
    startPair,
    onStop: (stop) => running.push(stop),
    async stopAll() {
      for (const stop of running.reverse()) await stop();
    },
  };
}

export async function offer(gateway) {
  return unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
}

export async function pay(gateway, payment, path = "/weather") {
  const res = await fetch(gateway.base + path, { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  const body = await res.text();
  const reason = res.status === 402 ? unb64(res.headers.get("payment-required")).error : res.status === 503 ? JSON.parse(body).error : undefined;
  return { status: res.status, reason, retryAfter: res.headers.get("retry-after") };
}

export async function exposureTotal(gateway) {
  return (await (await gateway.admin("/exposure")).json()).totalUsdMicros;
}

/** Runs the binary's CLI without blocking the event loop. */
export async function cli(args, extraEnv = {}) {
  try {
    const { stdout, stderr } = await promisify(execFile)(GATEWAY_BIN, args, { env: { ...process.env, ...extraEnv }, timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    return { code: error.code ?? 1, stdout: error.stdout ?? "", stderr: error.stderr ?? String(error) };
  }
}

export async function journaled(journal) {
  const { stdout } = await cli(["payments", "--journal", journal, "list", "--limit", "0"]);
  return stdout.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line));
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

/** A private redis-server without persistence on `port` (`extraArgs`: e.g. `--replicaof`), to kill. */
export async function startRedis(port, extraArgs = []) {
  // Its own folder: a replica's full sync writes a dump file there.
  const dir = mkdtempSync(join(tmpdir(), "x402-redis-"));
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no", ...extraArgs];
  return spawnRedis(spawn("redis-server", args, { stdio: "ignore" }), port);
}

/**
 * A private Redis Sentinel on `port` watching the primary on `primaryPort` as `service`:
 * one Sentinel (quorum 1) that calls a primary down after a second without answers.
 */
export async function startSentinel(port, primaryPort, service) {
  const config = join(mkdtempSync(join(tmpdir(), "x402-sentinel-")), "sentinel.conf");
  writeFileSync(
    config,
    [
      `port ${port}`,
      "bind 127.0.0.1",
      `sentinel monitor ${service} 127.0.0.1 ${primaryPort} 1`,
      `sentinel down-after-milliseconds ${service} 1000`,
      `sentinel failover-timeout ${service} 5000`,
      "",
    ].join("\n"),
  );
  return spawnRedis(spawn("redis-server", [config, "--sentinel"], { stdio: "ignore" }), port);
}

async function spawnRedis(child, port) {
  const exited = new Promise((r) => child.once("exit", r));
  await eventually(() => redisAnswers(port), 10_000, `redis on ${port}`);
  return {
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
    /** Stops the process without closing its sockets (a hung server), then lets it go on. */
    pause: () => child.kill("SIGSTOP"),
    resume: () => child.kill("SIGCONT"),
  };
}

/** One command through redis-cli; its answer as text. */
export async function redisCommand(port, ...args) {
  const { stdout } = await promisify(execFile)("redis-cli", ["-p", String(port), ...args.map(String)], { timeout: 10_000 });
  return stdout.trim();
}

/** A TCP relay to Redis whose answers (Redis → gateway) can be delayed: a slow store. */
export async function startSlowRelay(targetPort) {
  const relay = { delayMs: 0 };
  const sockets = new Set();
  const server = createServer((client) => {
    const upstream = connect(targetPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream);
    // Order-preserving delay: every chunk leaves `delayMs` after it arrived, never before the last.
    let last = 0;
    upstream.on("data", (chunk) => {
      const at = Math.max(Date.now() + relay.delayMs, last);
      last = at;
      setTimeout(() => client.write(chunk), at - Date.now());
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  relay.port = server.address().port;
  relay.close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  };
  return relay;
}

export { freePort };
