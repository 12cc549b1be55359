// Throwaway keys cannot walk around the paywall. Through the real binary on the dev chain:
// - with the balance check (the default), 200 unfunded keys are refused and nothing is served;
// - concurrent payments of one payer cannot each spend the same balance;
// - a payer whose balance cannot be read gets 503 and keeps its payment;
// - with the balance check off, what unfunded keys are served is bounded by the loss budget
//   (plus the unsettled credit limit); once it is spent every priced route answers 503, free
//   routes keep working, the budget survives a restart, and an operator can reset it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeFunctionData } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { devAccount, devPrivateKey, rpc, USDC_ADDRESS, TEST_USDC_ABI } from "../../deploy/devnet/devnet.mjs";
import { hits } from "../../deploy/devnet/sample-upstream.mjs";
import { startChainAndUpstream, startTestGateway, startRelay, freshAddress, balanceOf, eventually, runCli, b64, unb64 } from "./harness.mjs";
import { signPayment } from "./payments.mjs";

let env;

before(async () => {
  env = await startChainAndUpstream();
});

after(async () => {
  await env?.stop();
});

const throwawayKey = () => "0x" + randomBytes(32).toString("hex");

async function fund(address, amount) {
  const from = devAccount(0).address;
  const data = encodeFunctionData({ abi: TEST_USDC_ABI, functionName: "transfer", args: [address, amount] });
  await rpc(env.devnet.url, "eth_sendTransaction", [{ from, to: USDC_ADDRESS, data }]);
}

async function offer(gateway) {
  return unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
}

async function pay(gateway, payment) {
  const res = await fetch(gateway.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  const body = await res.text();
  const reason = res.status === 402 ? unb64(res.headers.get("payment-required")).error : (res.status === 503 ? JSON.parse(body).error : undefined);
  return { status: res.status, reason, body, retryAfter: res.headers.get("retry-after") };
}

function journaled(journalPath, state) {
  const out = runCli(["payments", "--journal", journalPath, "list", ...(state ? ["--state", state] : []), "--limit", "0"]);
  return out.stdout.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line));
}

const newJournal = () => join(mkdtempSync(join(tmpdir(), "x402-losses-")), "journal.db");

test("200 unfunded throwaway keys at once are refused by the balance check: nothing served, nothing journaled", async () => {
  const journalPath = newJournal();
  const gateway = await startTestGateway(env, { payTo: freshAddress(), settlement: { journal_path: journalPath } });
  try {
    const accepts = await offer(gateway);
    const servedBefore = hits.get("/weather") ?? 0;
    const answers = await Promise.all(Array.from({ length: 200 }, async () => pay(gateway, await signPayment(throwawayKey(), accepts))));
    // Refused for want of funds, or (when the 32 read slots stay busy past the timeout) told
    // to come back: the flood does not bury the RPC node that settlement needs.
    const kinds = new Set(answers.map((a) => `${a.status} ${a.reason}`));
    assert.ok([...kinds].every((k) => k === "402 invalid_exact_evm_insufficient_balance" || k === "503 balance_unavailable"), [...kinds].join(", "));
    assert.ok(kinds.has("402 invalid_exact_evm_insufficient_balance"));
    assert.equal((hits.get("/weather") ?? 0) - servedBefore, 0, "the upstream served none of them");
    assert.equal(journaled(journalPath).length, 0);
  } finally {
    await gateway.stop();
  }
});

test("concurrent payments of one payer cannot each spend the same balance", async () => {
  const gateway = await startTestGateway(env, { payTo: freshAddress(), settlement: { max_wait_ms: 600_000 } });
  try {
    const accepts = await offer(gateway);
    const key = throwawayKey();
    await fund(privateKeyToAccount(key).address, 3000n);
    const payments = await Promise.all(Array.from({ length: 12 }, () => signPayment(key, accepts)));
    const answers = await Promise.all(payments.map((p) => pay(gateway, p)));
    assert.equal(answers.filter((a) => a.status === 200).length, 3, "3000 covers exactly three payments of 1000");
    assert.ok(answers.filter((a) => a.status !== 200).every((a) => a.reason === "invalid_exact_evm_insufficient_balance"), JSON.stringify(answers.map((a) => a.reason)));
  } finally {
    await gateway.stop();
  }
});

test("a settled payment is not paid for twice by a balance read before it settled", async () => {
  const payTo = freshAddress();
  const gateway = await startTestGateway(env, { payTo, extraYaml: "exposure: { balance_cache_seconds: 600 }\n" });
  try {
    const accepts = await offer(gateway);
    const key = throwawayKey();
    await fund(privateKeyToAccount(key).address, 1000n);
    assert.equal((await pay(gateway, await signPayment(key, accepts))).status, 200);
    await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === 1000n, 20_000, "the first payment settled");
    // Its balance is now 0 and it owes nothing: the balance read before must not count.
    const second = await pay(gateway, await signPayment(key, accepts));
    assert.equal(second.status, 402, second.body);
    assert.equal(second.reason, "invalid_exact_evm_insufficient_balance");
  } finally {
    await gateway.stop();
  }
});

test("a payer whose balance cannot be read gets 503 with Retry-After, and its payment still works afterwards", async () => {
  const relay = await startRelay(Number(new URL(env.devnet.url).port));
  const gateway = await startTestGateway(env, { payTo: freshAddress(), rpcUrls: [relay.url], admin: true, extraYaml: "exposure: { balance_timeout_ms: 300 }\n" });
  try {
    const accepts = await offer(gateway);
    const payment = await signPayment(devPrivateKey(5), accepts);
    await relay.down();
    const refused = await pay(gateway, payment);
    assert.equal(refused.status, 503, refused.body);
    assert.equal(refused.reason, "balance_unavailable");
    assert.ok(Number(refused.retryAfter) > 0);
    assert.ok(JSON.parse(refused.body).message.length > 0);
    // Counted under the code the client saw, not the generic verify error.
    const metrics = await (await gateway.admin("/metrics")).text();
    assert.match(metrics, /^x402_payments_rejected_total\{reason="balance_unavailable",route="[^"]+"\} 1$/m);
    assert.equal((await fetch(gateway.base + "/health")).status, 200, "free routes keep working");
    await relay.up();
    assert.equal((await pay(gateway, payment)).status, 200, "the same payment is accepted once the balance can be read");
  } finally {
    await gateway.stop();
    await relay.down();
  }
});

test("with the balance check off, unfunded keys cost at most the loss budget; then priced routes answer 503 until reset", async () => {
  const journalPath = newJournal();
  const payTo = freshAddress();
  const exposure = 'exposure: { balance_check: false, max_losses_per_day: "$0.005", max_unsettled_total: "$0.003", max_unsettled_per_payer: "$0.001" }\n';
  const options = { payTo, admin: true, settlement: { journal_path: journalPath, max_wait_ms: 100 }, extraYaml: exposure };
  let gateway = await startTestGateway(env, options);
  try {
    const accepts = await offer(gateway);
    let served = 0;
    let spent = null;
    for (let i = 0; i < 200 && !spent; i++) {
      const answer = await pay(gateway, await signPayment(throwawayKey(), accepts));
      if (answer.status === 200) served++;
      else if (answer.status === 503) spent = answer;
      else {
        assert.equal(answer.reason, "invalid_transaction_state", "only the unsettled total limit refuses here");
        // Wait for the settler to resolve what is unsettled before the next key tries.
        await eventually(async () => (await (await gateway.admin("/exposure")).json()).totalUsdMicros === 0, 30_000, "unsettled back to 0");
      }
    }
    assert.ok(spent, "the loss budget ran out before 200 keys");
    assert.equal(spent.reason, "loss_budget_exhausted");
    assert.ok(Number(spent.retryAfter) > 0);
    assert.match(JSON.parse(spent.body).message, /loss budget/);
    // Served without payment: at most the budget, plus what was unsettled when it filled.
    assert.ok(served * 1000 <= 5000 + 3000, `served ${served}`);
    await eventually(() => journaled(journalPath, "failed").length === served, 30_000, "every served payment failed to settle");
    assert.equal(await balanceOf(env.devnet.url, payTo), 0n, "payTo got nothing: the journal says nothing settled");
    assert.equal(journaled(journalPath, "settled").length, 0);

    const state = await (await gateway.admin("/exposure")).json();
    assert.equal(state.lossBudget.spent, true);
    assert.ok(state.lossBudget.usedUsdMicros >= 5000);
    const metrics = await (await gateway.admin("/metrics")).text();
    assert.match(metrics, /^x402_loss_budget_used_usd_micros \d{4,}/m);

    // Everyone is refused now, an honest payer too; free routes still work.
    const honest = await pay(gateway, await signPayment(devPrivateKey(6), accepts));
    assert.equal(honest.status, 503);
    assert.equal((await fetch(gateway.base + "/health")).status, 200);

    // The budget is rebuilt from the journal: a restart does not refill it.
    await gateway.stop();
    gateway = await startTestGateway(env, options);
    assert.equal((await pay(gateway, await signPayment(devPrivateKey(6), accepts))).reason, "loss_budget_exhausted");

    const reset = await gateway.admin("/exposure/losses/reset", { method: "POST" });
    assert.equal(reset.status, 200);
    assert.ok((await reset.json()).clearedUsdMicros >= 5000);
    assert.equal((await pay(gateway, await signPayment(devPrivateKey(6), accepts))).status, 200, "an operator's reset reopens priced routes");
    await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === 1000n, 30_000, "the honest payment settled");
    await eventually(() => journaled(journalPath, "settled").length === 1, 30_000, "payTo's balance equals the journal's settled value");

    // The reset is in the journal too: a restart does not count the losses before it again.
    await gateway.stop();
    gateway = await startTestGateway(env, options);
    assert.equal((await pay(gateway, await signPayment(devPrivateKey(6), accepts))).status, 200, "still open after a restart");
  } finally {
    await gateway.stop();
  }
});
