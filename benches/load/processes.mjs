// What the load harnesses (run.mjs, soak.mjs) share: the release binaries, the CPU layout,
// starting pinned processes, their CPU and memory, and running the load generator.
//
// On a 2-core machine the layout is fixed so runs compare: core 0 carries the load generator,
// the upstream and the dev chain ("the world"); core 1 carries the program measured (the
// contender) alone.
import { spawn, execFileSync } from "node:child_process";
import { readFileSync, readdirSync, mkdirSync, createWriteStream } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createServer } from "node:net";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const RELEASE = join(ROOT, "target/release");
export const WORLD_CPU = "0";
export const CONTENDER_CPU = cpus().length > 1 ? "1" : "0";
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Builds the gateway and the harness's programs (generator, upstream, bare proxy) in release. */
export function buildRelease() {
  for (const args of [["-p", "x402-gateway-benches", "--bins"], ["-p", "x402-gateway", "--bin", "x402-gateway"]]) {
    execFileSync("cargo", ["build", "--release", "--locked", ...args], { cwd: ROOT, stdio: "inherit" });
  }
}

/** Starts `command` pinned to `cpu`; resolves once `port` answers `GET /health`. */
export async function startPinned(cpu, command, args, port, { env = {}, logFile = null } = {}) {
  const child = spawn("taskset", ["-c", cpu, command, ...args], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...env } });
  let stderr = "";
  const log = logFile ? createWriteStream(logFile) : null;
  child.stderr.on("data", (d) => {
    stderr = (stderr + d).slice(-4000);
    log?.write(d);
  });
  const exited = new Promise((r) => child.once("exit", r));
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`${command} exited: ${stderr}`);
    const ok = await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.arrayBuffer().then(() => true)).catch(() => false);
    if (ok) break;
    if (i > 400) throw new Error(`${command} did not answer on ${port}: ${stderr}`);
    await sleep(50);
  }
  return {
    pid: child.pid,
    /** The last 4 kB of its standard error, for a failure's report. */
    stderr: () => stderr,
    exited: () => child.exitCode !== null,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await Promise.race([exited, sleep(15_000)]);
      if (child.exitCode === null) child.kill("SIGKILL");
    },
  };
}

/** The process and its descendants. */
function processTree(pid) {
  const children = new Map();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(entry));
    } catch {
      // gone
    }
  }
  const all = [pid];
  for (let i = 0; i < all.length; i++) all.push(...(children.get(all[i]) ?? []));
  return all;
}

/** CPU seconds (user + system) used so far by the process tree. */
export function cpuSeconds(pid) {
  let ticks = 0;
  for (const p of processTree(pid)) {
    try {
      const fields = readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1].split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone
    }
  }
  return ticks / 100;
}

/** Peak resident memory of the process tree, MiB. */
export function peakRssMiB(pid) {
  let kb = 0;
  for (const p of processTree(pid)) {
    try {
      const match = readFileSync(`/proc/${p}/status`, "utf8").match(/VmHWM:\s+(\d+) kB/);
      kb += Number(match?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return kb / 1024;
}

/** CPU count and model, memory and kernel of this machine. */
export function machineDescription() {
  const model = cpus()[0]?.model ?? "unknown CPU";
  const kernel = readFileSync("/proc/version", "utf8").split(" ").slice(0, 3).join(" ");
  return `${cpus().length} × ${model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${kernel}`;
}

/**
 * `benches/results/<name>`, or `<name>-2` and on when a result of that name is there already
 * (in any format): the path of a new result, without its extension.
 */
export function resultStem(name) {
  const dir = join(ROOT, "benches/results");
  mkdirSync(dir, { recursive: true });
  const taken = new Set(readdirSync(dir).map((file) => file.replace(/\.[^.]+$/, "")));
  for (let n = 1; ; n++) {
    const stem = n === 1 ? name : `${name}-${n}`;
    if (!taken.has(stem)) return join(dir, stem);
  }
}

/** Runs x402-loadgen with `args` on the world's CPU; resolves to its JSON report. */
export function runLoadgen(args) {
  return new Promise((resolve, reject) => {
    const child = spawn("taskset", ["-c", WORLD_CPU, join(RELEASE, "x402-loadgen"), ...args], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.once("exit", (code) => (code === 0 ? resolve(JSON.parse(out.trim().split("\n").pop())) : reject(new Error(`x402-loadgen exited ${code}`))));
  });
}
