// Settlement through a bad chain, with the real binary: RPC URLs are tried in order (the
// first one is dead), and when the node goes away mid-run requests keep being served (balance
// check off) within the exposure limit, the journal holds what is owed, and settlement resumes by itself when
// the node returns.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { devPrivateKey } from "../../deploy/devnet/devnet.mjs";
import {
  startChainAndUpstream, startTestGateway, startRelay, freshAddress, freePort, balanceOf, eventually, runCli, sleep, b64, unb64,
} from "./harness.mjs";
import { signPayment } from "./payments.mjs";

let env;
let relay;
let gateway;
const payTo = freshAddress();
const journalPath = join(mkdtempSync(join(tmpdir(), "x402-outage-")), "journal.db");

before(async () => {
  env = await startChainAndUpstream();
  relay = await startRelay(Number(new URL(env.devnet.url).port));
  gateway = await startTestGateway(env, {
    payTo,
    rpcUrls: [`http://127.0.0.1:${await freePort()}`, relay.url],
    settlement: { journal_path: journalPath, max_wait_ms: 100 },
    // Off: this is serving on credit while the node is away, bounded by the exposure limit.
    // With the balance check on (the default) a payer whose balance is not cached gets 503
    // instead, fail closed (loss-budget.test.mjs).
    extraYaml: "exposure: { max_unsettled_total: \"$0.02\", balance_check: false }\n",
  });
});

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway?.logs());
  await relay?.up();
  await gateway?.stop();
  await relay?.down();
  await env?.stop();
});

const summary = () => JSON.parse(runCli(["payments", "--journal", journalPath, "summary"]).stdout);

async function pay(accepts, n) {
  const statuses = [];
  for (let i = 0; i < n; i++) {
    const payment = await signPayment(devPrivateKey(4 + (i % 3)), accepts);
    const res = await fetch(gateway.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
    statuses.push(res.status === 402 ? unb64(res.headers.get("payment-required")).error : res.status);
    await res.arrayBuffer();
  }
  return statuses;
}

test("the node goes away: serving goes on within the exposure limit, settlement resumes when it returns", { timeout: 90_000 }, async () => {
  const accepts = unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
  const start = await balanceOf(env.devnet.url, payTo);

  // The first RPC URL is dead; the second one settles.
  assert.deepEqual(await pay(accepts, 5), Array(5).fill(200));
  await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === start + 5000n, 20_000, "settled through the second URL");
  // On-chain is not enough: the settler must have read the receipt too, or those five
  // still count against the exposure limit when the node goes away.
  await eventually(() => summary().settled === 5, 20_000, "the settler to record the receipt");

  await relay.down();
  // Verification is local: paid requests are served while the node is gone, up to the
  // $0.02 of unsettled value the operator allows, then refused with a reason.
  const during = await pay(accepts, 22);
  assert.deepEqual(during.slice(0, 20), Array(20).fill(200));
  assert.deepEqual(during.slice(20), ["invalid_transaction_state", "invalid_transaction_state"]);
  await sleep(1500);
  const owed = summary();
  assert.equal((owed.accepted ?? 0) + (owed.submitted ?? 0), 20, JSON.stringify(owed));
  assert.equal(await balanceOf(env.devnet.url, payTo), start + 5000n, "nothing settles while the node is away");
  assert.match(gateway.logs(), /settlement round failed; will retry/);

  await relay.up();
  await eventually(() => summary().settled === 25, 45_000, "settlement resumes");
  assert.equal(await balanceOf(env.devnet.url, payTo), start + 25_000n);
  // With the debt settled there is room again.
  assert.deepEqual(await pay(accepts, 1), [200]);
});
