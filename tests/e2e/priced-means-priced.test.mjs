// Priced means priced: every spelling of a priced resource that an upstream would serve as
// that resource is challenged (402) or refused (400), never forwarded unpaid, whether the
// rest of the traffic goes to a free catch-all route or to `unmatched: forward`. The
// upstreams record every request they receive and behave like an Express app with default
// settings (case-insensitive, optional trailing slash, method override, X-Original-URL) and
// like a decoding router (decoded path, `;params` stripped, dot segments resolved).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, connect } from "node:net";
import { createServer as createHttpServer } from "node:http";
import { startChainAndUpstream, startGateway, startTestGateway, freePort, freshAddress, runCli, balanceOf, eventually, unb64 } from "./harness.mjs";
import { devPrivateKey } from "../../deploy/devnet/devnet.mjs";
import { payingFetch } from "../../deploy/devnet/pay.mjs";

let env;
const upstreams = {};

/** What an Express app with default settings routes on: case and a trailing slash ignored. */
function expressView(method, url, headers) {
  const rewritten = headers["x-original-url"] ?? headers["x-rewrite-url"] ?? url;
  const path = new URL(rewritten, "http://upstream").pathname.toLowerCase().replace(/(.)\/$/, "$1");
  const override = headers["x-http-method-override"] ?? headers["x-http-method"] ?? headers["x-method-override"];
  return { method: (override ?? method).toUpperCase(), path };
}

/** What a decoding router (ServeMux, Werkzeug, Tomcat) routes on. */
function decodingView(method, url, headers) {
  const rewritten = headers["x-original-url"] ?? headers["x-rewrite-url"] ?? url;
  let raw = rewritten.replace(/^[a-z]+:\/\/[^/]*/i, "").split("?")[0].replace(/\\/g, "/");
  raw = raw.split("/").map((segment) => segment.split(";")[0]).join("/");
  let decoded;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    decoded = raw;
  }
  const out = [];
  for (const segment of decoded.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") out.pop();
    else out.push(segment);
  }
  const path = "/" + out.join("/") + (decoded.endsWith("/") && out.length ? "/" : "");
  return { method: method.toUpperCase(), path: path.replace(/(.)\/$/, "$1") };
}

/** A recording upstream: every request's method, raw target and headers, answered 200. */
async function startRecordingUpstream(view) {
  const port = await freePort();
  const seen = [];
  const server = createHttpServer((req, res) => {
    const record = { method: req.method, url: req.url, headers: req.headers, view: view(req.method, req.url, req.headers) };
    seen.push(record);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ served: record.view.path }));
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { port, seen, stop: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

/** The priced resources: method, host (optional) and path as the upstream routes them. */
function isPricedResource({ method, path }, host) {
  const getLike = method === "GET" || method === "HEAD";
  const hostName = (host ?? "").toLowerCase().replace(/:\d+$/, "").replace(/\.$/, "");
  return (
    (getLike && path.toLowerCase() === "/weather") ||
    path.toLowerCase() === "/api" ||
    path.toLowerCase().startsWith("/api/") ||
    (hostName === "paid.example" && path.toLowerCase() === "/report")
  );
}

function leaked(record) {
  const absoluteHost = /^[a-z]+:\/\/([^/]*)/i.exec(record.url)?.[1];
  return isPricedResource(record.view, absoluteHost ?? record.headers.host);
}

/** Sends `request` as raw bytes (no client-side normalisation) and returns the status. */
function rawStatus(port, request) {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let data = "";
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no answer to ${JSON.stringify(request)}`)));
    socket.on("data", (chunk) => {
      data += chunk.toString("latin1");
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(data);
      if (status && data.includes("\r\n\r\n")) {
        socket.destroy();
        resolve({ status: Number(status[1]), head: data.split("\r\n\r\n")[0] });
      }
    });
    socket.on("error", reject);
    socket.on("end", () => resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(data)?.[1] ?? 0), head: data }));
    socket.write(request);
  });
}

const get = (target, { method = "GET", host = "api.local", headers = {}, version = "1.1" } = {}) => {
  const lines = [`${method} ${target} HTTP/${version}`];
  if (host !== null) lines.push(`Host: ${host}`);
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  lines.push("Connection: close", "", "");
  return lines.join("\r\n");
};

// Every class of spelling from the issue. `expect`: the gateway's answer without payment.
const ATTACKS = [
  ["case", get("/WEATHER"), 402],
  ["case (mixed)", get("/Weather"), 402],
  ["trailing slash", get("/weather/"), 402],
  ["case and trailing slash", get("/WEATHER/"), 402],
  ["encoded letter", get("/w%65ather"), 402],
  ["encoded first letter", get("/%77eather"), 402],
  ["encoded lower-case hex, upper-case letter", get("/%57eather"), 402],
  ["query kept, path decoded", get("/weath%65r?x=%2e%2e"), 402],
  [";params", get("/weather;x=1"), 400],
  [";params, empty", get("/weather;"), 400],
  ["..; traversal", get("/free/..;/weather"), 400],
  ["dot-dot traversal", get("/free/../weather"), 400],
  ["dot segment", get("/./weather"), 400],
  ["encoded dot-dot", get("/free/%2e%2e/weather"), 400],
  ["encoded dot-dot, upper case", get("/free/%2E%2E/weather"), 400],
  ["half-encoded dot-dot", get("/free/.%2e/weather"), 400],
  ["triple dot", get("/free/.../weather"), 400],
  ["encoded slash", get("/free%2f..%2fweather"), 400],
  ["encoded backslash", get("/free%5c..%5cweather"), 400],
  ["raw backslash", get("/free\\..\\weather"), 400],
  ["empty segment", get("//weather"), 400],
  ["encoded NUL", get("/weather%00"), 400],
  ["encoded newline", get("/weather%0a"), 400],
  ["encoded tab", get("/weather%09"), 400],
  ["encoded percent", get("/w%2565ather"), 400],
  ["malformed encoding", get("/weather%zz"), 400],
  ["HEAD as GET", get("/weather", { method: "HEAD" }), 402],
  ["HEAD, case", get("/WEATHER/", { method: "HEAD" }), 402],
  ["wildcard, case", get("/API/reports/1"), 402],
  ["wildcard, encoded segment", get("/api/r%65ports/1"), 402],
  ["wildcard, encoded prefix", get("/%61pi/reports/1"), 402],
  ["wildcard, encoded prefix letter mid-word", get("/a%70i/x"), 402],
  ["wildcard root without slash", get("/Api"), 402],
  ["host, trailing dot", get("/report", { host: "paid.example." }), 402],
  ["host, case and port", get("/Report", { host: "PAID.Example:8402" }), 402],
  ["absolute form, Host differs", get("http://paid.example/report", { host: "api.local" }), 400],
  ["absolute form, Host agrees", get("http://paid.example/report", { host: "paid.example" }), 402],
  ["absolute form, no Host", get("http://paid.example/report", { host: null, version: "1.0" }), 402],
  ["no host at all where routes are chosen by host", get("/weather", { host: null, version: "1.0" }), 400],
  ["method override", get("/weather", { method: "POST", headers: { "X-HTTP-Method-Override": "GET" } }), 200],
  ["method override (X-HTTP-Method)", get("/weather", { method: "POST", headers: { "X-HTTP-Method": "GET" } }), 200],
  ["method override (X-Method-Override)", get("/weather", { method: "POST", headers: { "X-Method-Override": "GET" } }), 200],
  ["URL rewrite (X-Original-URL)", get("/health", { headers: { "X-Original-URL": "/weather" } }), 200],
  ["URL rewrite (X-Rewrite-URL)", get("/health", { headers: { "X-Rewrite-URL": "/weather" } }), 200],
  ["operator's extra header", get("/health", { headers: { "X-Debug-Route": "/weather" } }), 200],
];

before(async () => {
  env = await startChainAndUpstream();
  upstreams.express = await startRecordingUpstream(expressView);
  upstreams.decoding = await startRecordingUpstream(decodingView);
});

after(async () => {
  for (const upstream of Object.values(upstreams)) await upstream.stop();
  await env?.stop();
});

async function gatewayWith(fallback, upstreamPort, requests = "{ strip_headers: [X-Debug-Route] }") {
  const listenPort = await freePort();
  const catchAll = fallback === "catch-all" ? "  - { name: free, path: /*, upstream: rec, free: true }\n" : "";
  const unmatched = fallback === "catch-all" ? "{ action: not_found }" : "{ action: forward, upstream: rec }";
  const yaml = `
server: { listen: "127.0.0.1:${listenPort}", threads: 1, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
admin: { listen: null }
networks: { base-sepolia: { rpc_url: "${env.devnet.url}" } }
payments: { pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" }
settlement: { private_key_env: X402_SETTLEMENT_KEY }
requests: ${requests}
upstreams:
  rec: { addresses: ["127.0.0.1:${upstreamPort}"] }
routes:
  - { name: health, path: /health, upstream: rec, free: true }
  - { name: weather, methods: [GET], path: /weather, upstream: rec, price: "$0.001" }
  - { name: reports, path: /api/*, upstream: rec, price: "$0.001" }
  - { name: host-report, host: paid.example, path: /report, upstream: rec, price: "$0.001" }
${catchAll}unmatched: ${unmatched}
`;
  return startGateway(yaml, { listenPort });
}

for (const fallback of ["catch-all", "unmatched-forward"]) {
  for (const kind of ["express", "decoding"]) {
    test(`no spelling of a priced resource reaches a ${kind} upstream unpaid (${fallback})`, async () => {
      const upstream = upstreams[kind];
      upstream.seen.length = 0;
      const gateway = await gatewayWith(fallback, upstream.port);
      const port = Number(new URL(gateway.base).port);
      try {
        const failures = [];
        for (const [name, request, expected] of ATTACKS) {
          const before = upstream.seen.length;
          const { status } = await rawStatus(port, request);
          if (status !== expected) failures.push(`${name}: ${status}, expected ${expected}`);
          const reached = upstream.seen.slice(before);
          for (const record of reached) {
            if (leaked(record)) failures.push(`${name}: the upstream served ${record.method} ${record.url} as ${record.view.method} ${record.view.path} unpaid`);
            for (const header of ["x-http-method-override", "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url", "x-debug-route"]) {
              if (header in record.headers) failures.push(`${name}: ${header} was forwarded`);
            }
          }
        }
        assert.deepEqual(failures, []);
        // The harness's readiness probe and the forwarded cases did reach it: it records.
        assert.ok(upstream.seen.some((r) => r.url === "/health"), "the recording upstream saw the free requests");
      } finally {
        await gateway.stop();
      }
    });
  }
}

test("the canonical path is what is forwarded; the query string is passed through untouched", async () => {
  const upstream = upstreams.decoding;
  const gateway = await gatewayWith("unmatched-forward", upstream.port);
  const port = Number(new URL(gateway.base).port);
  try {
    const before = upstream.seen.length;
    assert.equal((await rawStatus(port, get("/h%65alth?q=%41%2e&r=;x"))).status, 200);
    assert.equal((await rawStatus(port, get("/%46ree/caf%c3%a9/"))).status, 200);
    assert.equal((await rawStatus(port, get("http://api.local/free/x?y=1", { host: null, version: "1.0" }))).status, 200);
    const forwarded = upstream.seen.slice(before);
    assert.deepEqual(forwarded.map((r) => r.url), ["/health?q=%41%2e&r=;x", "/Free/caf%C3%A9/", "/free/x?y=1"]);
    assert.equal(forwarded[2].headers.host, "api.local", "the absolute-form authority is the Host the upstream sees");
  } finally {
    await gateway.stop();
  }
});

test("with requests.path_params: strip, ;params are dropped before matching and forwarding", async () => {
  const upstream = upstreams.decoding;
  const gateway = await gatewayWith("unmatched-forward", upstream.port, "{ path_params: strip }");
  const listenPort = Number(new URL(gateway.base).port);
  try {
    const before = upstream.seen.length;
    assert.equal((await rawStatus(listenPort, get("/weather;jsessionid=1"))).status, 402);
    assert.equal((await rawStatus(listenPort, get("/free/..;/weather"))).status, 400);
    assert.equal((await rawStatus(listenPort, get("/health;v=2?a=;b"))).status, 200);
    assert.deepEqual(upstream.seen.slice(before).map((r) => r.url), ["/health?a=;b"]);
  } finally {
    await gateway.stop();
  }
});

test("operators can ask why: routes --explain, GET /routes?explain= and validate's overlap warning", async () => {
  const gateway = await startTestGateway(env, { payTo: freshAddress(), admin: true });
  try {
    const cli = runCli(["routes", "--config", gateway.configPath, "--explain", "head", "/W%65ather/?x=1"]);
    assert.equal(cli.status, 0, cli.stderr);
    assert.match(cli.stdout, /canonical target: \/Weather\/\?x=1/);
    assert.match(cli.stdout, /route: weather \(\/weather\)/);
    assert.match(cli.stdout, /answer: 402/);
    const refused = runCli(["routes", "--config", gateway.configPath, "--explain", "GET", "/free/..;/weather"]);
    assert.match(refused.stdout, /refused: 400 ambiguous_path/);

    const table = (await (await gateway.admin("/routes")).json()).routes;
    const rules = (name) => table.filter((r) => r.name === name).map((r) => [r.caseSensitive, r.trailingSlash])[0];
    assert.deepEqual(rules("weather"), [false, "optional"], "priced routes are lenient by default");
    assert.deepEqual(rules("free"), [true, "strict"], "free routes match as written");

    const res = await gateway.admin("/routes?explain=" + encodeURIComponent("/%57EATHER") + "&method=GET");
    assert.equal(res.status, 200);
    const explained = await res.json();
    assert.equal(explained.canonical, "/WEATHER");
    assert.equal(explained.route.name, "weather");
    assert.equal(explained.status, 402);
    const free = await (await gateway.admin("/routes?explain=" + encodeURIComponent("/something/else"))).json();
    assert.equal(free.route.name, "free");
    assert.equal(free.status, 200);
    assert.equal((await gateway.admin("/routes?explain=/x&method=" + encodeURIComponent("BAD METHOD"))).status, 400);

    const validate = runCli(["validate", "--config", gateway.configPath]);
    assert.equal(validate.status, 0, validate.stderr);
    assert.match(validate.stdout, /warning: free route "free" \(\/\*\) overlaps priced route "weather"/);
  } finally {
    await gateway.stop();
  }
});

test("a payment for an encoded spelling is charged as the priced route and settles to payTo; the upstream gets the canonical path", async () => {
  const payTo = freshAddress();
  const gateway = await startTestGateway(env, { payTo });
  try {
    const res = await payingFetch(devPrivateKey(4))(gateway.base + "/w%65ather");
    assert.equal(res.status, 200);
    // Only the sample upstream's exact /weather answers this body: it got the canonical path.
    assert.deepEqual(await res.json(), { location: "Lisbon", temperature_c: 21, conditions: "sunny" });
    assert.equal(unb64(res.headers.get("payment-response")).success, true);
    await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === 1000n, 20_000, "payTo balance 1000");
  } finally {
    await gateway.stop();
  }
});
