// A sample upstream API for the dev setup and the end-to-end tests. It knows nothing about
// payments: the gateway in front of it does.
//   GET  /weather          JSON weather report
//   GET  /health           {"status":"ok"}
//   ANY  /echo[/...]       what the upstream received: method, path, query, headers, body
//   ANY  /status/{code}    answers with that status
//   GET  /stream?chunks=N  N chunks of text, 20 ms apart (chunked transfer)
//   GET  /bytes/{n}        n deterministic binary bytes
//   GET  /slow?ms=N        answers after N milliseconds (timeouts)
//   GET  /ws[/...]         a WebSocket upgrade (101), then echoes whatever it is sent
// Usage: node deploy/devnet/sample-upstream.mjs [--port 8080] [--host 127.0.0.1]
//   (--host 0.0.0.0 in a container, so the gateway's container can reach it)
import { createServer } from "node:http";
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";

/** Requests seen per path, for tests that must know whether the upstream was called. */
export const hits = new Map();

export function deterministicBytes(n) {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + 7) & 0xff;
  return out;
}

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function handle(req, res) {
  const url = new URL(req.url, "http://upstream");
  hits.set(url.pathname, (hits.get(url.pathname) ?? 0) + 1);
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = Buffer.concat(chunks);
  if (url.pathname === "/weather") {
    return json(res, 200, { location: "Lisbon", temperature_c: 21, conditions: "sunny" });
  }
  if (url.pathname === "/health") return json(res, 200, { status: "ok" });
  if (url.pathname === "/echo" || url.pathname.startsWith("/echo/")) {
    return json(res, 200, {
      method: req.method,
      path: url.pathname,
      query: url.search,
      headers: req.headers,
      body: body.toString("base64"),
    });
  }
  const status = url.pathname.match(/^\/status\/(\d{3})$/);
  if (status) return json(res, Number(status[1]), { status: Number(status[1]) });
  if (url.pathname === "/stream") {
    const n = Number(url.searchParams.get("chunks") ?? 5);
    res.writeHead(200, { "content-type": "text/plain" });
    for (let i = 0; i < n; i++) {
      res.write(`chunk ${i}\n`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return res.end();
  }
  if (url.pathname === "/slow") {
    await new Promise((resolve) => setTimeout(resolve, Number(url.searchParams.get("ms") ?? 1000)));
    return json(res, 200, { slow: true });
  }
  const bytes = url.pathname.match(/^\/bytes\/(\d+)$/);
  if (bytes) {
    const data = deterministicBytes(Number(bytes[1]));
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": data.length });
    return res.end(data);
  }
  return json(res, 404, { error: "not found" });
}

/** Accepts a WebSocket handshake on /ws[/...] (RFC 6455 §4.2.2) and echoes raw bytes after it. */
function acceptUpgrade(req, socket) {
  const url = new URL(req.url, "http://upstream");
  hits.set(url.pathname, (hits.get(url.pathname) ?? 0) + 1);
  const key = req.headers["sec-websocket-key"];
  if (!(url.pathname === "/ws" || url.pathname.startsWith("/ws/")) || !key) {
    socket.end("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    return;
  }
  const accept = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`);
  socket.on("error", () => {});
  socket.pipe(socket);
}

export function startSampleUpstream({ port = 8080, host = "127.0.0.1" } = {}) {
  const server = createServer((req, res) => {
    handle(req, res).catch((error) => {
      res.destroy(error);
    });
  });
  server.on("upgrade", acceptUpgrade);
  server.keepAliveTimeout = 60_000;
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve(server));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const portFlag = process.argv.indexOf("--port");
  const port = portFlag > 0 ? Number(process.argv[portFlag + 1]) : 8080;
  const hostFlag = process.argv.indexOf("--host");
  const host = hostFlag > 0 ? process.argv[hostFlag + 1] : "127.0.0.1";
  await startSampleUpstream({ port, host });
  console.log(`sample upstream on http://${host}:${port}`);
}
