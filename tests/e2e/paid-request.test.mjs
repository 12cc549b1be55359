// The paid request path, end to end: real anvil, real sample upstream, the real
// x402-gateway binary over TCP, and the official @x402/fetch + @x402/evm client.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, createHash } from "node:crypto";
import { connect } from "node:net";
import { privateKeyToAccount } from "viem/accounts";
import { devPrivateKey, devAccount, rpc } from "../../deploy/devnet/devnet.mjs";
import { deterministicBytes } from "../../deploy/devnet/sample-upstream.mjs";
import { payingFetch } from "../../deploy/devnet/pay.mjs";
import {
  startChainAndUpstream, startTestGateway, freshAddress, freePort, balanceOf, authorizationState,
  eventually, sleep, b64, unb64,
} from "./harness.mjs";
import { signPayment } from "./payments.mjs";

let env;
let gateway;
const payTo = freshAddress();

before(async () => {
  env = await startChainAndUpstream();
  gateway = await startTestGateway(env, { payTo });
});

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway?.logs());
  await gateway?.stop();
  await env?.stop();
});

async function challenge(path = "/weather") {
  const res = await fetch(gateway.base + path);
  assert.equal(res.status, 402);
  return { res, required: unb64(res.headers.get("payment-required")), body: await res.json() };
}

async function send(path, payment, header = "PAYMENT-SIGNATURE") {
  const value = typeof payment === "string" ? payment : b64(payment);
  return fetch(gateway.base + path, { headers: { [header]: value } });
}

async function reasonOf(res) {
  assert.equal(res.status, 402);
  const required = unb64(res.headers.get("payment-required"));
  const body = await res.json();
  assert.equal(body.error, required.error, "v1 body and v2 header agree on the reason");
  assert.ok(body.message.length > 0, "a human message comes with the reason");
  return required.error;
}

test("an unpaid request gets a 402 with a v2 header and a v1 body", async () => {
  const { res, required, body } = await challenge();
  assert.equal(required.x402Version, 2);
  assert.equal(required.resource.url, `${gateway.base}/weather`);
  assert.equal(required.resource.description, "Current weather");
  assert.deepEqual(required.accepts, [{
    scheme: "exact", network: "eip155:84532", amount: "1000",
    asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e", payTo, maxTimeoutSeconds: 300,
    extra: { name: "USDC", version: "2" },
  }]);
  assert.equal(body.x402Version, 1);
  assert.equal(body.accepts[0].network, "base-sepolia");
  assert.equal(body.accepts[0].maxAmountRequired, "1000");
  assert.equal(body.accepts[0].resource, `${gateway.base}/weather`);
  assert.match(res.headers.get("access-control-expose-headers"), /PAYMENT-REQUIRED, PAYMENT-RESPONSE/);
  // The same route offers the same requirements every time (clients deep-compare them).
  assert.deepEqual((await challenge()).required.accepts, required.accepts);
});

test("a browser gets an HTML page that says what it costs", async () => {
  const res = await fetch(gateway.base + "/weather", {
    headers: { accept: "text/html,application/xhtml+xml", "user-agent": "Mozilla/5.0 (X11; Linux x86_64)" },
  });
  assert.equal(res.status, 402);
  assert.match(res.headers.get("content-type"), /text\/html/);
  const html = await res.text();
  assert.match(html, /Payment required/);
  assert.match(html, /\$0\.001/);
  assert.match(html, /Current weather/);
});

test("the official @x402/fetch client pays, gets the upstream body and a receipt, and the batch lands on-chain", async () => {
  const payer = devAccount(2).address;
  const payToBefore = await balanceOf(env.devnet.url, payTo);
  const payerBefore = await balanceOf(env.devnet.url, payer);
  const res = await payingFetch(devPrivateKey(2))(gateway.base + "/weather");
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { location: "Lisbon", temperature_c: 21, conditions: "sunny" });
  const receipt = unb64(res.headers.get("payment-response"));
  assert.equal(receipt.success, true);
  assert.equal(receipt.network, "eip155:84532");
  assert.equal(receipt.payer, payer);
  assert.equal(receipt.transaction, "");
  assert.equal(receipt.extensions["x402-gateway"].settlement, "pending");
  await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === payToBefore + 1000n, 20_000, "payTo balance +1000");
  assert.equal(await balanceOf(env.devnet.url, payer), payerBefore - 1000n);

  // The receipt id leads to the payment's state and, once settled, its transaction.
  const { paymentId, receipt: receiptPath } = receipt.extensions["x402-gateway"];
  assert.match(paymentId, /^[0-9a-f]{32}$/);
  assert.equal(receiptPath, `/.well-known/x402/receipts/${paymentId}`);
  const settled = await eventually(async () => {
    const lookup = await (await fetch(gateway.base + receiptPath)).json();
    return lookup.state === "settled" && lookup;
  }, 20_000, "receipt says settled");
  assert.equal(settled.payer, payer);
  assert.equal(settled.amount, "1000");
  assert.equal(settled.route, "weather");
  const mined = await rpc(env.devnet.url, "eth_getTransactionReceipt", [settled.transaction]);
  assert.equal(mined.status, "0x1", "the receipt's transaction is the mined batch");
  const unknown = await fetch(gateway.base + "/.well-known/x402/receipts/" + "0".repeat(32));
  assert.equal(unknown.status, 404);
  assert.equal((await unknown.json()).error, "receipt_not_found");
});

test("50 concurrent requests carrying one payment: exactly one is served", async () => {
  const { required } = await challenge();
  const payment = await signPayment(devPrivateKey(3), required.accepts[0]);
  const responses = await Promise.all(Array.from({ length: 50 }, () => send("/weather", payment)));
  const statuses = responses.map((r) => r.status);
  assert.equal(statuses.filter((s) => s === 200).length, 1, `statuses: ${statuses}`);
  assert.equal(statuses.filter((s) => s === 402).length, 49);
  const refused = responses.find((r) => r.status === 402);
  assert.equal(await reasonOf(refused), "invalid_exact_evm_nonce_already_used");
  await Promise.all(responses.filter((r) => !r.bodyUsed).map((r) => r.arrayBuffer()));
  // And the one that was served settles.
  const { from, nonce } = payment.payload.authorization;
  await eventually(() => authorizationState(env.devnet.url, from, nonce), 20_000, "authorization used on-chain");
  // A replay after settlement is still refused.
  assert.equal(await reasonOf(await send("/weather", payment)), "invalid_exact_evm_nonce_already_used");
});

test("each bad payment gets the right status and reason", async () => {
  const { required } = await challenge();
  const accepts = required.accepts[0];
  const key = devPrivateKey(4);
  const now = Math.floor(Date.now() / 1000);
  const cases = [
    ["wrong amount", { authorization: { value: "999" } }, "invalid_exact_evm_authorization_value"],
    ["wrong recipient", { authorization: { to: devAccount(5).address } }, "invalid_exact_evm_recipient_mismatch"],
    ["expired", { authorization: { validBefore: String(now - 10) } }, "invalid_exact_evm_payload_authorization_valid_before"],
    ["expires within the settle margin", { authorization: { validBefore: String(now + 5) } }, "invalid_exact_evm_payload_authorization_valid_before"],
    ["valid for too long", { authorization: { validBefore: String(now + 3600) } }, "invalid_exact_evm_payload_authorization_valid_before"],
    ["not yet valid", { authorization: { validAfter: String(now + 120) } }, "invalid_exact_evm_payload_authorization_valid_after"],
    ["bad signature", { signature: "0x" + "11".repeat(65) }, "invalid_exact_evm_signature"],
    ["signed for another chain", { domain: { chainId: 8453 } }, "invalid_exact_evm_signature"],
    ["signed with the wrong token name", { domain: { name: "USD Coin" } }, "invalid_exact_evm_signature"],
    ["smart-wallet signature", { signature: "0x" + "11".repeat(200) }, "invalid_exact_evm_signature"],
    ["accepted on another chain", { accepted: { network: "eip155:1" } }, "invalid_exact_evm_network_mismatch"],
    ["accepted with a changed price", { accepted: { amount: "1" } }, "invalid_payment_requirements"],
    ["another scheme", { accepted: { scheme: "upto" } }, "unsupported_scheme"],
  ];
  for (const [name, tamper, reason] of cases) {
    const payment = await signPayment(key, accepts, tamper);
    assert.equal(await reasonOf(await send("/weather", payment)), reason, name);
  }
});

test("an undecodable payment header gets 400 with a reason", async () => {
  for (const value of ["!!!not-base64!!!", b64("not an object").slice(0, 5) + "=", Buffer.from("{").toString("base64"), "A".repeat(10_000)]) {
    const res = await send("/weather", value);
    assert.equal(res.status, 400, value.slice(0, 20));
    const body = await res.json();
    assert.equal(body.error, "invalid_payload");
    assert.ok(body.message.length > 0);
  }
  const res = await send("/weather", { x402Version: 2, accepted: {}, payload: {} });
  assert.equal(await reasonOf(res), "unsupported_scheme");
});

test("a v1 X-PAYMENT is accepted and answered with X-PAYMENT-RESPONSE", async () => {
  const { required } = await challenge();
  const v2 = await signPayment(devPrivateKey(6), required.accepts[0]);
  const v1 = { x402Version: 1, scheme: "exact", network: "base-sepolia", payload: v2.payload };
  const res = await send("/weather", v1, "x-payment");
  assert.equal(res.status, 200);
  const receipt = unb64(res.headers.get("x-payment-response"));
  assert.equal(receipt.success, true);
  assert.equal(receipt.payer, devAccount(6).address);
  const { from, nonce } = v1.payload.authorization;
  await eventually(() => authorizationState(env.devnet.url, from, nonce), 20_000, "v1 payment settled");
});

test("an upstream 500 charges nobody and releases the payment", async () => {
  const { required } = await challenge("/status/500");
  const payment = await signPayment(devPrivateKey(7), required.accepts[0]);
  const first = await send("/status/500", payment);
  assert.equal(first.status, 500);
  assert.equal(first.headers.get("payment-response"), null);
  // Released: the same payment is not a replay; it reaches the upstream again.
  const second = await send("/status/500", payment);
  assert.equal(second.status, 500);
  await sleep(1500); // several batch windows
  const { from, nonce } = payment.payload.authorization;
  assert.equal(await authorizationState(env.devnet.url, from, nonce), false, "never settled");
  // Released payments stay usable: the same payment on a billable answer of the same route
  // is served and charged once.
  const ok = await send("/status/200", payment);
  assert.equal(ok.status, 200);
  assert.equal(unb64(ok.headers.get("payment-response")).success, true);
  await eventually(() => authorizationState(env.devnet.url, from, nonce), 20_000, "settled after the billable answer");
});

test("a dead upstream answers 502 and charges nobody", async () => {
  const { required } = await challenge("/dead");
  const payment = await signPayment(devPrivateKey(8), required.accepts[0]);
  const res = await send("/dead", payment);
  assert.equal(res.status, 502);
  assert.equal(res.headers.get("payment-response"), null);
  const body = await res.json();
  assert.equal(body.error, "upstream_unavailable");
  assert.match(body.message, /not charged/);
  const again = await send("/dead", payment);
  assert.equal(again.status, 502, "released, not a replay");
});

test("free routes pass through untouched: bytes, streaming, method, query, headers, body", async () => {
  const big = await fetch(gateway.base + "/bytes/300000");
  assert.equal(big.status, 200);
  const got = Buffer.from(await big.arrayBuffer());
  const want = deterministicBytes(300000);
  assert.equal(createHash("sha256").update(got).digest("hex"), createHash("sha256").update(want).digest("hex"));

  const stream = await fetch(gateway.base + "/stream?chunks=10");
  const reader = stream.body.getReader();
  const started = Date.now();
  const first = await reader.read();
  const firstAt = Date.now() - started;
  let text = Buffer.from(first.value).toString();
  for (let r = await reader.read(); !r.done; r = await reader.read()) text += Buffer.from(r.value).toString();
  const doneAt = Date.now() - started;
  assert.equal(text, Array.from({ length: 10 }, (_, i) => `chunk ${i}\n`).join(""));
  assert.ok(doneAt - firstAt >= 100, `chunks arrive as they are produced (first ${firstAt} ms, done ${doneAt} ms)`);

  const res = await fetch(gateway.base + "/echo/a/b?x=1&y=%20z", {
    method: "POST",
    headers: { "x-custom": "kept", "payment-signature": "secret", "x-payment": "secret", "content-type": "text/plain" },
    body: "hello body",
  });
  assert.equal(res.status, 200);
  const echo = await res.json();
  assert.equal(echo.method, "POST");
  assert.equal(echo.path, "/echo/a/b");
  assert.equal(echo.query, "?x=1&y=%20z");
  assert.equal(Buffer.from(echo.body, "base64").toString(), "hello body");
  assert.equal(echo.headers["x-custom"], "kept");
  assert.equal(echo.headers["payment-signature"], undefined, "payment header is not forwarded");
  assert.equal(echo.headers["x-payment"], undefined);
  assert.equal(echo.headers["x-forwarded-for"], "127.0.0.1");
  assert.equal(echo.headers["via"], "1.1 x402-gateway");
});

/** One raw HTTP/1.1 request: fetch() would normalize the path before sending it. */
function rawGet(base, path) {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\nConnection: close\r\n\r\n`);
    });
    let data = "";
    socket.on("data", (d) => (data += d));
    socket.on("end", () => resolve(data));
    socket.on("error", reject);
  });
}

test("ambiguous paths are refused, not guessed", async () => {
  for (const path of ["/free/../weather", "/a/%2e%2e/weather", "/a//weather", "/a/./weather"]) {
    const response = await rawGet(gateway.base, path);
    assert.match(response, /^HTTP\/1\.1 400 /, path);
    assert.match(response, /ambiguous_path/);
  }
});
