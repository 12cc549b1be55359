// The settlement soak: does settlement keep up with paid load, on a chain with Base's pace?
//
// For each offered rate it starts a fresh dev chain (blocks every 2 s, a 150M block gas
// limit), a fresh gateway (its own journal) and drives paid requests at that fixed rate for
// minutes, sampling the admin API once a second; then it waits (bounded) for the backlog to
// drain, stops the gateway and checks the ledger: what payTo received on-chain must equal what
// the journal says was settled. It reports per rate the settled payments/s while the load ran,
// the largest backlog, the oldest unsettled payment's age, the drain time, gas per payment,
// refusals by reason and failed (expired) payments.
//
//   node benches/load/soak.mjs                        rates 250 … 2000/s, 3 min each; writes
//                                                     benches/results/soak-<date>.{md,json,png}
//   node benches/load/soak.mjs --rates 300 --minutes 3
//   node benches/load/soak.mjs --quick                one low rate for 15 s, prints only (CI)
//   node benches/load/soak.mjs --set settlement.max_batch=500 --set settlement.max_wait_ms=1000
//
// Every gateway setting the soak uses is in GATEWAY_SETTINGS below; `--set path=value`
// overrides one (or adds one the settler learns later), the value read as JSON when it
// parses, else as a string. It exits non-zero when the harness breaks or money is at risk:
// a failed or expired payment, or a ledger mismatch.
//
// Layout (2 cores): the load generator, the upstream, the dev chain and this script on CPU 0
// (the world; the chain at normal priority, since settling is what is measured), the gateway
// alone on CPU 1.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { randomBytes } from "node:crypto";
import { startDevnet, devPrivateKey, devAccount, rpc, balanceOf } from "../../deploy/devnet/devnet.mjs";
import {
  ROOT, RELEASE, WORLD_CPU, CONTENDER_CPU, sleep, freePort, buildRelease, startPinned, cpuSeconds, machineDescription, runLoadgen, resultStem,
} from "./processes.mjs";

/** The gateway's settings for the soak (merged into a complete gateway.yaml; see `--set`). */
const GATEWAY_SETTINGS = {
  server: { threads: 1, verify_threads: 1, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 5 },
  // Today's settler: batches of max_batch every max_wait_ms at most. A rewritten one reads
  // its own knobs from here too (e.g. --set settlement.max_transactions_in_flight=4).
  settlement: { journal_sync: "full", drain_timeout_seconds: 10 },
  // Credit limits lifted: the soak measures settlement, not the exposure policy. The
  // balance check stays on, as in production; the loss budget keeps its default.
  exposure: { max_unsettled_per_payer: null, max_unsettled_total: null, balance_check: true },
};

/** The soak's own knobs; each has a flag. */
const SOAK_DEFAULTS = {
  rates: "250,500,1000,1500,2000",
  minutes: "3",
  "block-seconds": "2",
  "block-gas-limit": "150000000",
  payers: "50",
  connections: "64",
  // How long to wait for the backlog to drain after the load, per rate.
  "drain-limit-seconds": "300",
  // The gateway's log level (X402_LOG); "info" shows every settlement batch with its timings.
  "log-level": "warn",
};
const QUICK_RATE = 20;
const QUICK_SECONDS = 15;
const QUICK_DRAIN_LIMIT_SECONDS = 60;
// The issue's targets: settled payments/s per network with one key, and the oldest unsettled
// payment's age below capacity.
const TARGET_SETTLED_PER_SECOND = 1000;
const TARGET_OLDEST_SECONDS = 30;
// The first part of the load that the settled rate leaves out (see `summarize`).
const RAMP_FRACTION = 0.2;
// A rate settled at this fraction of the offered rate or more is below capacity.
const KEPT_UP = 0.9;
const PRICE = "$0.001";
const ADMIN_TOKEN_ENV = "X402_SOAK_ADMIN_TOKEN";
const PAY_TO_INDEX = 1;
const FIRST_PAYER_INDEX = 2;

function options() {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      "no-build": { type: "boolean", default: false },
      set: { type: "string", multiple: true, default: [] },
      ...Object.fromEntries(Object.entries(SOAK_DEFAULTS).map(([name, value]) => [name, { type: "string", default: value }])),
    },
  });
  const quick = values.quick;
  const number = (name) => {
    const value = Number(values[name]);
    if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} wants a positive number, not ${values[name]}`);
    return value;
  };
  const rates = values.rates.split(",").map(Number);
  if (rates.some((rate) => !Number.isFinite(rate) || rate <= 0)) throw new Error(`--rates wants positive numbers, not ${values.rates}`);
  return {
    quick,
    build: !values["no-build"],
    rates: quick ? [QUICK_RATE] : rates,
    seconds: quick ? QUICK_SECONDS : number("minutes") * 60,
    drainLimitSeconds: quick ? QUICK_DRAIN_LIMIT_SECONDS : number("drain-limit-seconds"),
    blockSeconds: number("block-seconds"),
    blockGasLimit: number("block-gas-limit"),
    payers: number("payers"),
    connections: number("connections"),
    settings: withOverrides(GATEWAY_SETTINGS, values.set),
    logLevel: values["log-level"],
  };
}

/** `settings` with each `path=value` of `overrides` set (value as JSON when it parses). */
function withOverrides(settings, overrides) {
  const result = structuredClone(settings);
  for (const override of overrides) {
    const at = override.indexOf("=");
    if (at < 1) throw new Error(`--set wants section.key=value, not ${override}`);
    const path = override.slice(0, at).split(".");
    const text = override.slice(at + 1);
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      value = text;
    }
    let node = result;
    for (const key of path.slice(0, -1)) node = node[key] ??= {};
    node[path.at(-1)] = value;
  }
  return result;
}

/** A complete gateway config: the soak's settings over the ports and paths of this run. */
function gatewayConfig(dir, { port, adminPort, upstreamPort, rpcUrl, settings }) {
  const config = {
    ...settings,
    server: { ...settings.server, listen: `127.0.0.1:${port}` },
    admin: { listen: `127.0.0.1:${adminPort}`, token_env: ADMIN_TOKEN_ENV, watch_config: false, ...settings.admin },
    networks: { "base-sepolia": { rpc_url: rpcUrl } },
    payments: { pay_to: devAccount(PAY_TO_INDEX).address, ...settings.payments },
    settlement: { ...settings.settlement, journal_path: join(dir, "journal.db") },
    upstreams: { sample: { addresses: [`127.0.0.1:${upstreamPort}`] } },
    routes: [{ name: "paid", methods: ["GET"], path: "/weather", upstream: "sample", price: PRICE }],
  };
  const path = join(dir, "gateway.yaml");
  // JSON is YAML: no YAML writer needed.
  writeFileSync(path, JSON.stringify(config, null, 2));
  return path;
}

/** GET on the admin API with the bearer token. */
async function admin(base, token, path) {
  const response = await fetch(base + path, { headers: { authorization: `Bearer ${token}` } });
  if (!response.ok) throw new Error(`admin ${path}: ${response.status} ${await response.text()}`);
  return path === "/metrics" ? response.text() : response.json();
}

/**
 * The samples of a Prometheus text exposition whose metric is `name`, as [labels, value]:
 * only the sample lines the gateway writes (`name{a="b",…} value`), no escapes in labels.
 */
function metricSamples(text, name) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || (line[name.length] !== "{" && line[name.length] !== " ")) continue;
    const labelText = line[name.length] === "{" ? line.slice(name.length + 1, line.lastIndexOf("}")) : "";
    const labels = Object.fromEntries([...labelText.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    samples.push([labels, Number(line.slice(line.lastIndexOf(" ") + 1))]);
  }
  return samples;
}

const metricSum = (text, name, filter = () => true) => metricSamples(text, name).filter(([labels]) => filter(labels)).reduce((sum, [, v]) => sum + v, 0);

/** One look at the gateway: backlog, oldest age, settled so far, gas so far, refusals so far. */
async function sample(adminBase, token, pids) {
  const [settlement, metrics] = await Promise.all([admin(adminBase, token, "/settlement"), admin(adminBase, token, "/metrics")]);
  const cpu = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuSeconds(pid)]));
  const refusals = {};
  for (const [labels, value] of metricSamples(metrics, "x402_payments_rejected_total")) refusals[labels.reason] = (refusals[labels.reason] ?? 0) + value;
  return {
    atMs: Date.now(),
    unsettled: settlement.unsettled,
    oldestSeconds: settlement.oldestUnsettledAgeSeconds ?? 0,
    stalled: settlement.stalled?.cause ?? null,
    settled: metricSum(metrics, "x402_settlement_payments_total", (l) => l.state === "settled"),
    failed: metricSum(metrics, "x402_settlement_payments_total", (l) => l.state === "failed"),
    gasUsed: metricSum(metrics, "x402_settlement_gas_used_total"),
    transactions: metricSum(metrics, "x402_settlement_batches_total"),
    refusals,
    cpu,
  };
}

/** Samples once a second until `stop()`; the samples so far in `.samples`. `pids`: processes
 *  whose CPU time each sample reads, by name. */
function startSampler(adminBase, token, pids) {
  const samples = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const next = Date.now() + 1000;
      try {
        samples.push(await sample(adminBase, token, pids));
      } catch (error) {
        // One missed sample is a gap in a curve; the gateway dying shows in the load's result.
        console.error(`sample failed: ${error.message}`);
      }
      await sleep(Math.max(0, next - Date.now()));
    }
  })();
  return { samples, stop: async () => ((running = false), await done) };
}

/** The journal's payments in `state`, read with the gateway's own CLI (safe after it stopped). */
function journalPayments(journalPath, state) {
  const out = execFileSync(join(RELEASE, "x402-gateway"), ["payments", "--journal", journalPath, "list", "--state", state, "--limit", "0"], {
    encoding: "utf8",
    maxBuffer: 1 << 30,
  });
  return out.split("\n").filter(Boolean).map((line) => JSON.parse(line));
}

/** Waits until the chain has no pending transaction (a settlement sent just before the stop). */
async function chainIdle(rpcUrl, limitMs) {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    const status = await rpc(rpcUrl, "txpool_status");
    if (Number(status.pending) === 0 && Number(status.queued) === 0) return true;
    await sleep(500);
  }
  return false;
}

/** The sample taken at or just before `atMs` (the first one when none is). */
function sampleAt(samples, atMs) {
  let found = samples[0];
  for (const s of samples) if (s.atMs <= atMs) found = s;
  return found;
}

/** One offered rate on a fresh chain and a fresh gateway. */
async function soakRate(rate, run) {
  const chain = await startDevnet({
    port: await freePort(),
    blockSeconds: run.blockSeconds,
    blockGasLimit: run.blockGasLimit,
    fundedAccounts: FIRST_PAYER_INDEX + run.payers,
  });
  spawnSync("taskset", ["-a", "-cp", WORLD_CPU, String(chain.process.pid)]);
  const dir = mkdtempSync(join(run.dir, `rate-${rate}-`));
  const ports = { port: await freePort(), adminPort: await freePort() };
  const token = randomBytes(24).toString("hex");
  const yaml = gatewayConfig(dir, { ...ports, upstreamPort: run.upstreamPort, rpcUrl: chain.url, settings: run.settings });
  const payTo = devAccount(PAY_TO_INDEX).address;
  const adminBase = `http://127.0.0.1:${ports.adminPort}`;
  let gateway;
  let sampler;
  try {
    const balanceBefore = await balanceOf(chain.url, payTo);
    gateway = await startPinned(CONTENDER_CPU, join(RELEASE, "x402-gateway"), ["run", "--config", yaml], ports.port, {
      env: { X402_SETTLEMENT_KEY: devPrivateKey(0), [ADMIN_TOKEN_ENV]: token, X402_LOG: run.logLevel },
      logFile: join(dir, "gateway.log"),
    });
    console.log(`soak: ${rate}/s: the gateway logs (${run.logLevel}) to ${join(dir, "gateway.log")}`);
    sampler = startSampler(adminBase, token, { chain: chain.process.pid, gateway: gateway.pid });
    const keys = Array.from({ length: run.payers }, (_, i) => devPrivateKey(FIRST_PAYER_INDEX + i));
    const launchedMs = Date.now();
    const load = await runLoadgen([
      "--url", `http://127.0.0.1:${ports.port}/weather`, "--rate", String(rate), "--duration", String(run.seconds), "--warmup", "0",
      "--connections", String(run.connections), "--threads", "1",
      // A few more than the schedule sends: running out would end the load early.
      "--pay", String(Math.ceil(rate * run.seconds * 1.02) + 10), "--keys", keys.join(","),
    ]);
    const loadStartMs = launchedMs + load.signing_seconds * 1000;
    const loadEndMs = loadStartMs + run.seconds * 1000;
    const drainDeadline = Date.now() + run.drainLimitSeconds * 1000;
    let drainedAtMs = null;
    while (Date.now() < drainDeadline && !gateway.exited()) {
      const last = sampler.samples.at(-1);
      if (last && last.atMs > loadEndMs && last.unsettled === 0) {
        drainedAtMs = last.atMs;
        break;
      }
      await sleep(500);
    }
    await sampler.stop();
    await gateway.stop();
    const idle = await chainIdle(chain.url, 10_000);
    return summarize({
      rate, run, load, samples: sampler.samples, loadStartMs, loadEndMs, drainedAtMs, idle,
      ledger: await ledger(chain.url, payTo, balanceBefore, join(dir, "journal.db")),
    });
  } finally {
    await sampler?.stop();
    await gateway?.stop();
    await chain.stop();
  }
}

/** payTo's on-chain gain against the journal's settled value, and the journal's failures. */
async function ledger(rpcUrl, payTo, balanceBefore, journalPath) {
  const received = (await balanceOf(rpcUrl, payTo)) - balanceBefore;
  const value = (payments) => payments.reduce((sum, p) => sum + BigInt(p.amount), 0n);
  const settled = journalPayments(journalPath, "settled");
  // Sent but not confirmed when the gateway stopped: the next start reconciles them, so the
  // chain may hold up to their value more than `settled` says, never less.
  const submitted = journalPayments(journalPath, "submitted");
  const accepted = journalPayments(journalPath, "accepted");
  const failed = journalPayments(journalPath, "failed");
  const failedReasons = {};
  for (const p of failed) {
    const reason = String(p.reason ?? "unknown").split(":")[0];
    failedReasons[reason] = (failedReasons[reason] ?? 0) + 1;
  }
  const settledValue = value(settled);
  const submittedValue = value(submitted);
  return {
    received: received.toString(),
    settledValue: settledValue.toString(),
    settled: settled.length,
    submitted: submitted.length,
    leftUnsettled: accepted.length + submitted.length,
    failed: failed.length,
    failedReasons,
    balanced: received >= settledValue && received <= settledValue + submittedValue,
  };
}

function summarize({ rate, run, load, samples, loadStartMs, loadEndMs, drainedAtMs, idle, ledger }) {
  // The settled rate is read once settlement has caught up with the load's start: the first
  // payments settle a batch window and a block later, which would lower a short run's rate.
  const atStart = sampleAt(samples, loadStartMs + RAMP_FRACTION * run.seconds * 1000);
  const atEnd = sampleAt(samples, loadEndMs);
  const last = samples.at(-1) ?? atEnd;
  const window = atEnd && atStart ? (atEnd.atMs - atStart.atMs) / 1000 : 0;
  const refusals = Object.fromEntries(Object.entries(last?.refusals ?? {}).filter(([, n]) => n > 0));
  const stalls = [...new Set(samples.map((s) => s.stalled).filter(Boolean))];
  const row = {
    offered: rate,
    seconds: run.seconds,
    signingSeconds: load.signing_seconds,
    sent: load.requests + load.errors,
    servedPerSecond: load.ok / load.seconds,
    statuses: load.statuses,
    errors: load.errors,
    paymentsRanOut: load.payments_ran_out,
    refusals,
    stalls,
    settledPerSecond: window > 0 ? (atEnd.settled - atStart.settled) / window : 0,
    // Share of one core each process used over the same window: which side ran out first.
    cpuShare: window > 0 ? Object.fromEntries(Object.keys(atEnd.cpu).map((name) => [name, (atEnd.cpu[name] - atStart.cpu[name]) / window])) : {},
    maxBacklog: Math.max(0, ...samples.map((s) => s.unsettled)),
    maxOldestSeconds: Math.max(0, ...samples.map((s) => s.oldestSeconds)),
    drainSeconds: drainedAtMs === null ? null : Math.max(0, (drainedAtMs - loadEndMs) / 1000),
    // With the load generator stopped the chain has its core to itself: what settles then.
    drainPerSecond: drainedAtMs !== null && drainedAtMs > loadEndMs && atEnd ? atEnd.unsettled / ((drainedAtMs - loadEndMs) / 1000) : null,
    gasPerPayment: last && last.settled > 0 ? last.gasUsed / last.settled : null,
    paymentsPerTransaction: last && last.transactions > 0 ? last.settled / last.transactions : null,
    chainIdleAtEnd: idle,
    ledger,
    // The curve of one rate, for the JSON: seconds since the load started.
    series: samples.map((s) => ({ t: (s.atMs - loadStartMs) / 1000, unsettled: s.unsettled, oldest: s.oldestSeconds, settled: s.settled })),
  };
  row.moneySafe = ledger.failed === 0 && ledger.balanced;
  return row;
}

const cpuText = (share) => ["chain", "gateway"].map((name) => (share?.[name] === undefined ? "—" : `${Math.round(share[name] * 100)}%`)).join(" / ");
const fmt = (value, digits = 0) => (value === null || value === undefined ? "—" : Number(value).toFixed(digits));
const pairs = (object) => Object.entries(object).map(([k, v]) => `${k} ${v}`).join(", ") || "none";

function render(rows, run, started) {
  const lines = [];
  lines.push(`# Settlement soak${run.quick ? " (quick)" : ""}: ${started.toISOString()}`);
  lines.push("");
  lines.push(`Machine: ${machineDescription()}. Loopback. CPU ${WORLD_CPU}: load generator, upstream, dev chain (anvil, normal priority) and the harness; CPU ${CONTENDER_CPU}: the gateway alone.`);
  lines.push(`Chain: anvil, a block every ${run.blockSeconds} s, block gas limit ${run.blockGasLimit.toLocaleString("en")}, a fresh chain and journal per rate. ` +
    `${run.payers} payers (round robin), one settlement key, price ${PRICE}; ${run.seconds} s of load per rate on ${run.connections} connections; drain waited up to ${run.drainLimitSeconds} s.`);
  lines.push("");
  lines.push("Gateway settings (over the defaults):");
  lines.push("");
  lines.push("```json");
  lines.push(JSON.stringify(run.settings));
  lines.push("```");
  lines.push("");
  lines.push("| offered /s | served /s | answers | refusals by reason | settled /s during load¹ | largest backlog | oldest unsettled, max s | drain s (settled /s) | gas / payment | payments / tx | failed (reasons) | ledger | CPU used: chain / gateway² |");
  lines.push("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const r of rows) {
    const l = r.ledger;
    const ledgerText = `${l.balanced ? "OK" : "MISMATCH"}: +${l.received} on-chain, ${l.settledValue} settled in the journal${l.leftUnsettled ? `, ${l.leftUnsettled} left unsettled` : ""}`;
    lines.push(`| ${r.offered} | ${fmt(r.servedPerSecond)} | ${pairs(r.statuses)}${r.errors ? `, ${r.errors} errors` : ""} | ${pairs(r.refusals)} | ${fmt(r.settledPerSecond, 1)} | ${r.maxBacklog} | ${r.maxOldestSeconds} | ${r.drainSeconds === null ? `not drained in ${run.drainLimitSeconds}` : `${fmt(r.drainSeconds)} (${fmt(r.drainPerSecond)})`} | ${fmt(r.gasPerPayment)} | ${fmt(r.paymentsPerTransaction, 1)} | ${l.failed}${l.failed ? ` (${pairs(l.failedReasons)})` : ""} | ${ledgerText} | ${cpuText(r.cpuShare)} |`);
  }
  lines.push("");
  const notes = rows.flatMap((r) => [
    r.stalls.length ? `- ${r.offered}/s: the gateway reported settlement stalled (${r.stalls.join(", ")}).` : null,
    r.paymentsRanOut ? `- ${r.offered}/s: the load generator ran out of pre-signed payments.` : null,
    `- ${r.offered}/s: signing the payments took ${fmt(r.signingSeconds, 1)} s before the clock started.`,
  ]).filter(Boolean);
  lines.push(`¹ Over the load's last ${100 - RAMP_FRACTION * 100}%: the first payments settle a batch window and a block after the load starts. The drain after the load is not counted.`);
  lines.push("");
  lines.push("² Over the same window, as a share of one core: the dev chain (which executes every batch when it is simulated, estimated and mined) shares its core with the load generator and the upstream; the gateway has its core alone.");
  lines.push("");
  lines.push(...notes);
  lines.push("");
  lines.push("## Targets");
  lines.push("");
  const best = Math.max(0, ...rows.map((r) => r.settledPerSecond));
  // Below capacity: every payment served and settled as fast as it came.
  const below = rows.filter((r) => r.settledPerSecond >= KEPT_UP * r.offered);
  const above = rows.filter((r) => r.settledPerSecond < KEPT_UP * r.offered);
  const targets = [
    [`≥ ${TARGET_SETTLED_PER_SECOND} payments/s settled, sustained, one key`, best >= TARGET_SETTLED_PER_SECOND, `best ${fmt(best, 1)}/s`],
    [`below capacity the oldest unsettled payment ≤ ${TARGET_OLDEST_SECONDS} s`, below.length ? below.every((r) => r.maxOldestSeconds <= TARGET_OLDEST_SECONDS) : null,
      below.length ? below.map((r) => `${r.offered}/s: ${r.maxOldestSeconds} s`).join(", ") : "no rate was below capacity"],
    ["above capacity: refusals, not expiry", above.length ? above.every((r) => r.ledger.failed === 0 && Object.keys(r.refusals).length > 0) : null,
      above.length ? above.map((r) => `${r.offered}/s: ${pairs(r.refusals)}; ${r.ledger.failed} failed`).join("; ") : "no rate was above capacity"],
    ["no failed or expired payment, ledger balanced", rows.every((r) => r.moneySafe), rows.map((r) => `${r.offered}/s: ${r.ledger.failed} failed, ledger ${r.ledger.balanced ? "OK" : "MISMATCH"}`).join("; ")],
  ];
  for (const [what, met, value] of targets) lines.push(`- ${met === null ? "N/A" : met ? "MET" : "NOT MET"}: ${what} (${value})`);
  lines.push("");
  return lines.join("\n");
}

/** The PNG of settled against offered rate, drawn by plot_soak.py (matplotlib from PyPI). */
function plot(jsonPath, pngPath) {
  const hasMatplotlib = () => spawnSync("python3", ["-c", "import matplotlib"]).status === 0;
  if (!hasMatplotlib()) {
    console.log("installing matplotlib (pip install --user) for the plot");
    spawnSync("python3", ["-m", "pip", "install", "--user", "--quiet", "matplotlib"], { stdio: "inherit" });
  }
  const result = spawnSync("python3", [join(ROOT, "benches/load/plot_soak.py"), jsonPath, pngPath], { stdio: "inherit" });
  if (result.status !== 0) console.error(`no plot: plot_soak.py exited ${result.status}`);
}

async function main() {
  const run = options();
  if (run.build) buildRelease();
  const started = new Date();
  run.dir = mkdtempSync(join(tmpdir(), "x402-soak-"));
  run.upstreamPort = await freePort();
  const upstream = await startPinned(WORLD_CPU, join(RELEASE, "x402-bench-upstream"), ["--port", String(run.upstreamPort), "--threads", "1"], run.upstreamPort);
  const rows = [];
  try {
    for (const rate of run.rates) {
      console.log(`soak: ${rate}/s for ${run.seconds} s`);
      const row = await soakRate(rate, run);
      rows.push(row);
      console.log(`soak: ${rate}/s: served ${fmt(row.servedPerSecond)}/s, settled ${fmt(row.settledPerSecond, 1)}/s, largest backlog ${row.maxBacklog}, oldest ${row.maxOldestSeconds} s, drain ${fmt(row.drainSeconds)} s, failed ${row.ledger.failed}, ledger ${row.ledger.balanced ? "OK" : "MISMATCH"}`);
    }
  } finally {
    await upstream.stop();
  }
  const report = render(rows, run, started);
  console.log("\n" + report);
  if (!run.quick) {
    const stem = resultStem(`soak-${started.toISOString().slice(0, 10)}`);
    const { dir, upstreamPort, ...settings } = run;
    writeFileSync(`${stem}.json`, JSON.stringify({ started: started.toISOString(), run: settings, target: TARGET_SETTLED_PER_SECOND, rows }, null, 1));
    writeFileSync(`${stem}.md`, report.replace("## Targets", `![settled against offered rate](${stem.split("/").pop()}.png)\n\n## Targets`));
    plot(`${stem}.json`, `${stem}.png`);
    console.log(`written to ${stem}.{md,json,png}`);
  }
  if (!rows.every((r) => r.moneySafe)) {
    console.error("soak: money at risk: a payment failed or the ledger does not balance (see the table)");
    process.exit(1);
  }
}

await main();
