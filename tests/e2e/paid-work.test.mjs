// One payment buys the upstream's work once. Attacks, through the real binary on the dev chain:
// - a WebSocket upgrade on a priced route, sent again and again with one payment;
// - a client that hangs up once its request reached the upstream, then resends the payment;
// - an upstream timeout, then the same payment again.
// And what stays allowed: a payment the upstream declined (non-billable status) or never saw
// (connection refused) may be used again; `charge_on: forward` charges whatever the upstream says.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { devPrivateKey } from "../../deploy/devnet/devnet.mjs";
import { hits } from "../../deploy/devnet/sample-upstream.mjs";
import { startChainAndUpstream, startGateway, freePort, freshAddress, balanceOf, eventually, b64, unb64 } from "./harness.mjs";
import { signPayment } from "./payments.mjs";

let env;
let gateway;
const payTo = freshAddress();
const payer = devPrivateKey(3);

before(async () => {
  env = await startChainAndUpstream();
  const listenPort = await freePort();
  const deadPort = await freePort();
  const yaml = `
server: { listen: "127.0.0.1:${listenPort}", threads: 2, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
admin: { listen: null }
networks: { base-sepolia: { rpc_url: "${env.devnet.url}" } }
payments: { pay_to: "${payTo}" }
settlement: { max_wait_ms: 200 }
upstreams:
  sample: { addresses: ["127.0.0.1:${env.upstreamPort}"] }
  impatient: { addresses: ["127.0.0.1:${env.upstreamPort}"], read_timeout_ms: 300 }
  dead: { addresses: ["127.0.0.1:${deadPort}"], connect_timeout_ms: 500 }
routes:
  - { name: ws-refused, path: /ws/refused, upstream: sample, price: "$0.002" }
  - { name: ws-charged, path: /ws/charged, upstream: sample, price: "$0.002", upgrades: charge }
  - { name: slow, methods: [GET], path: /slow, upstream: sample, price: "$0.003" }
  - { name: timeout, methods: [POST], path: /slow, upstream: impatient, price: "$0.003" }
  - { name: forward, methods: [POST], path: "/status/{code}", upstream: sample, price: "$0.004", charge_on: forward }
  - { name: status, methods: [GET], path: "/status/{code}", upstream: sample, price: "$0.001" }
  - { name: dead-forward, methods: [POST], path: /dead, upstream: dead, price: "$0.001", charge_on: forward }
  - { name: slow-forward, methods: [PUT], path: /slow, upstream: impatient, price: "$0.003", charge_on: forward }
  - { name: dead, path: /dead, upstream: dead, price: "$0.001" }
  - { name: health, path: /health, upstream: sample, free: true }
`;
  gateway = await startGateway(yaml, { listenPort });
});

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway?.logs());
  await gateway?.stop();
  await env?.stop();
});

async function requirementsFor(path, method = "GET") {
  const res = await fetch(gateway.base + path, { method });
  assert.equal(res.status, 402, `${path} is priced`);
  return unb64(res.headers.get("payment-required")).accepts[0];
}

const hitsOf = (path) => hits.get(path) ?? 0;

/**
 * Writes `head` on a fresh TCP connection and resolves with the first response head, or
 * with null when `hangUpWhen` turns true first (the socket is then destroyed unanswered).
 */
function rawExchange(head, { hangUpWhen } = {}) {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(new URL(gateway.base).port), "127.0.0.1");
    let text = "";
    let poll;
    const finish = (value) => {
      clearInterval(poll);
      clearTimeout(limit);
      resolve({ head: value, socket });
    };
    socket.on("error", reject);
    const limit = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no response head in 20 s to: ${head.split("\r\n")[0]}`));
    }, 20_000);
    socket.on("close", () => clearTimeout(limit));
    socket.on("data", (chunk) => {
      text += chunk.toString("latin1");
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) finish({ status: Number(text.slice(9, 12)), text: text.slice(0, end), rest: text.slice(end + 4) });
    });
    socket.write(head);
    if (hangUpWhen) {
      poll = setInterval(() => {
        if (hangUpWhen()) {
          socket.destroy();
          finish(null);
        }
      }, 5);
    }
  });
}

function upgradeRequest(path, payment) {
  return `GET ${path} HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
    `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
    `PAYMENT-SIGNATURE: ${b64(payment)}\r\n\r\n`;
}

function paidGet(path, payment) {
  return `GET ${path} HTTP/1.1\r\nHost: gateway\r\nPAYMENT-SIGNATURE: ${b64(payment)}\r\n\r\n`;
}

const reasonIn = (head) => unb64(/payment-required: (\S+)/i.exec(head.text)?.[1] ?? "e30=").error;

test("a WebSocket upgrade on a priced route is refused before anything is charged, however often it is sent", async () => {
  const payment = await signPayment(payer, await requirementsFor("/ws/refused"));
  for (let i = 0; i < 3; i++) {
    const { head, socket } = await rawExchange(upgradeRequest("/ws/refused", payment));
    socket.destroy();
    assert.equal(head.status, 403, `attempt ${i + 1}: ${head.text}`);
    assert.match(head.rest, /upgrade_not_allowed/);
  }
  assert.equal(hitsOf("/ws/refused"), 0, "the upstream never opened a tunnel");
});

test("upgrades: charge journals the payment before the 101; the same payment opens no second tunnel", async () => {
  const before = await balanceOf(env.devnet.url, payTo);
  const payment = await signPayment(payer, await requirementsFor("/ws/charged"));
  const first = await rawExchange(upgradeRequest("/ws/charged", payment));
  assert.equal(first.head.status, 101, first.head.text);
  assert.match(first.head.text, /payment-response: /i, "the 101 carries the receipt");
  const echoed = new Promise((resolve) => first.socket.once("data", (d) => resolve(d.toString())));
  first.socket.write("ping");
  assert.equal(await echoed, "ping", "the tunnel works");
  first.socket.destroy();
  for (let i = 0; i < 2; i++) {
    const again = await rawExchange(upgradeRequest("/ws/charged", payment));
    again.socket.destroy();
    assert.equal(again.head.status, 402, again.head.text);
    assert.equal(reasonIn(again.head), "invalid_exact_evm_nonce_already_used");
  }
  assert.equal(hitsOf("/ws/charged"), 1, "one payment, one tunnel");
  await eventually(async () => (await balanceOf(env.devnet.url, payTo)) - before === 2000n, 30_000, "the tunnel's payment settled");
});

const spentLines = () => (gateway.logs().match(/payment="?spent/g) ?? []).length;

test("a client that hangs up after its request reached the upstream cannot buy the work again with the same payment", async () => {
  const payment = await signPayment(payer, await requirementsFor("/slow"));
  const start = hitsOf("/slow");
  for (let i = 0; i < 3; i++) {
    const seen = hitsOf("/slow");
    const spent = spentLines();
    // Hang up as soon as the upstream has the request, or read the answer if one comes first.
    const { head, socket } = await rawExchange(paidGet("/slow?ms=800", payment), { hangUpWhen: () => hitsOf("/slow") > seen });
    socket.destroy();
    if (i === 0) {
      assert.equal(head, null, "the first attempt reached the upstream and was abandoned");
      // Resend only once the gateway has finished with it: a reservation still in flight
      // would refuse the resend whatever the rule.
      await eventually(() => spentLines() > spent, 15_000, "the abandoned request logged as spent");
    } else {
      assert.equal(head?.status, 402, `attempt ${i + 1} is refused: ${head?.text}`);
      assert.equal(reasonIn(head), "invalid_exact_evm_nonce_already_used");
    }
  }
  assert.equal(hitsOf("/slow") - start, 1, "the upstream was called once");
  const res = await fetch(gateway.base + "/slow?ms=1", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  assert.equal(res.status, 402, "still used up afterwards");
});

test("a 100 Continue is not the upstream's answer: hanging up after it does not free the payment", async () => {
  const payment = await signPayment(payer, await requirementsFor("/slow"));
  const seen = hitsOf("/slow");
  const spent = spentLines();
  const head = `GET /slow?ms=800 HTTP/1.1\r\nHost: gateway\r\nExpect: 100-continue\r\nPAYMENT-SIGNATURE: ${b64(payment)}\r\n\r\n`;
  const first = await rawExchange(head, { hangUpWhen: () => hitsOf("/slow") > seen });
  first.socket.destroy();
  await eventually(() => spentLines() > spent, 15_000, "the abandoned request logged as spent");
  const again = await rawExchange(paidGet("/slow?ms=1", payment));
  again.socket.destroy();
  assert.equal(again.head.status, 402, again.head.text);
  assert.equal(reasonIn(again.head), "invalid_exact_evm_nonce_already_used");
  assert.equal(hitsOf("/slow") - seen, 1, "the upstream was called once");
});

test("upgrades: charge takes a WebSocket only: an h2c upgrade is refused before anything is charged", async () => {
  const payment = await signPayment(payer, await requirementsFor("/ws/charged"));
  const request = upgradeRequest("/ws/charged", payment).replace("Upgrade: websocket", "Upgrade: h2c");
  const { head, socket } = await rawExchange(request);
  socket.destroy();
  assert.equal(head.status, 403, head.text);
  assert.match(head.rest, /upgrade_not_allowed/);
  const websocket = await rawExchange(upgradeRequest("/ws/charged", payment));
  websocket.socket.destroy();
  assert.equal(websocket.head.status, 101, "the same payment still opens a WebSocket: nothing was used up");
});

test("after an upstream timeout the same payment is refused, not sent upstream again", async () => {
  const payment = await signPayment(payer, await requirementsFor("/slow", "POST"));
  const send = (ms) => fetch(gateway.base + `/slow?ms=${ms}`, { method: "POST", headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  const start = hitsOf("/slow");
  const first = await send(1500);
  assert.equal(first.status, 504);
  const body = await first.json();
  assert.equal(body.error, "upstream_timeout");
  assert.match(body.message, /not charged, but .* used up/);
  const again = await send(1);
  assert.equal(again.status, 402);
  assert.equal(unb64(again.headers.get("payment-required")).error, "invalid_exact_evm_nonce_already_used");
  assert.equal(hitsOf("/slow") - start, 1, "the upstream worked once");
});

test("a payment the upstream declined, or never saw, may be used again", async () => {
  const before = await balanceOf(env.devnet.url, payTo);
  const requirements = await requirementsFor("/status/200");
  const declined = await signPayment(payer, requirements);
  const res500 = await fetch(gateway.base + "/status/500", { headers: { "PAYMENT-SIGNATURE": b64(declined) } });
  assert.equal(res500.status, 500);
  assert.equal(res500.headers.get("payment-response"), null, "not charged");
  const reused = await fetch(gateway.base + "/status/200", { headers: { "PAYMENT-SIGNATURE": b64(declined) } });
  assert.equal(reused.status, 200, "a non-billable answer freed the authorization");
  assert.ok(reused.headers.get("payment-response"));

  const neverSeen = await signPayment(payer, await requirementsFor("/dead"));
  const refused = await fetch(gateway.base + "/dead", { headers: { "PAYMENT-SIGNATURE": b64(neverSeen) } });
  assert.equal(refused.status, 502);
  const retried = await fetch(gateway.base + "/dead", { headers: { "PAYMENT-SIGNATURE": b64(neverSeen) } });
  assert.equal(retried.status, 502, "a refused connection used nothing up: the same payment is checked again, not refused as a replay");
  await eventually(async () => (await balanceOf(env.devnet.url, payTo)) - before === 1000n, 30_000, "exactly the one charged payment settled");
});

test("charge_on: forward charges before the upstream is called, whatever it answers", async () => {
  const before = await balanceOf(env.devnet.url, payTo);
  const payment = await signPayment(payer, await requirementsFor("/status/500", "POST"));
  const send = () => fetch(gateway.base + "/status/500", { method: "POST", headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  const res = await send();
  assert.equal(res.status, 500, "the upstream's answer is passed on");
  const receipt = unb64(res.headers.get("payment-response"));
  assert.equal(receipt.success, true, "and it was charged");
  const again = await send();
  assert.equal(again.status, 402, "the charged payment is not reusable");
  assert.equal(unb64(again.headers.get("payment-required")).error, "invalid_exact_evm_nonce_already_used");
  await eventually(async () => (await balanceOf(env.devnet.url, payTo)) - before === 4000n, 30_000, "the forward-charged payment settled");
});

test("charge_on: forward charges once connected: a refused connection costs nothing, a timeout carries the receipt", async () => {
  const before = await balanceOf(env.devnet.url, payTo);
  const payment = await signPayment(payer, await requirementsFor("/dead", "POST"));
  const refused = await fetch(gateway.base + "/dead", { method: "POST", headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  assert.equal(refused.status, 502);
  assert.equal(refused.headers.get("payment-response"), null, "not charged");
  assert.match((await refused.json()).message, /not charged\./);

  const slow = await signPayment(payer, await requirementsFor("/slow", "PUT"));
  const timedOut = await fetch(gateway.base + "/slow?ms=1500", { method: "PUT", headers: { "PAYMENT-SIGNATURE": b64(slow) } });
  assert.equal(timedOut.status, 504);
  assert.equal(unb64(timedOut.headers.get("payment-response")).success, true, "the charged payment's receipt comes with the error");
  assert.match((await timedOut.json()).message, /charged when the request was forwarded/);
  await eventually(async () => (await balanceOf(env.devnet.url, payTo)) - before === 3000n, 30_000, "only the forwarded one settled");
});
