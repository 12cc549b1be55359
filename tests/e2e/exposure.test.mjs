// Bounded exposure through the real binary: a payer over its unsettled limit is refused,
// a payer that drains its balance between verification and settlement costs the operator
// at most that limit and is then refused, and other payers are unaffected.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeFunctionData } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { devAccount, devPrivateKey, rpc, USDC_ADDRESS, TEST_USDC_ABI } from "../../deploy/devnet/devnet.mjs";
import {
  startChainAndUpstream, startTestGateway, freshAddress, balanceOf, eventually, runCli, b64, unb64,
} from "./harness.mjs";
import { signPayment } from "./payments.mjs";

let env;
let gateway;
const journalPath = join(mkdtempSync(join(tmpdir(), "x402-exposure-")), "journal.db");
const payTo = freshAddress();

before(async () => {
  env = await startChainAndUpstream();
  gateway = await startTestGateway(env, {
    payTo,
    settlement: { journal_path: journalPath, max_wait_ms: 4000 },
    extraYaml: "exposure: { max_unsettled_per_payer: \"$0.003\", block_failed_payers_seconds: 3600 }\n",
  });
});

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway?.logs());
  await gateway?.stop();
  await env?.stop();
});

/** Sends a token transfer from `from` (impersonated on anvil). */
async function transferFrom(from, to, amount) {
  await rpc(env.devnet.url, "anvil_setBalance", [from, "0xde0b6b3a7640000"]);
  await rpc(env.devnet.url, "anvil_impersonateAccount", [from]);
  const data = encodeFunctionData({ abi: TEST_USDC_ABI, functionName: "transfer", args: [to, amount] });
  await rpc(env.devnet.url, "eth_sendTransaction", [{ from, to: USDC_ADDRESS, data }]);
  await rpc(env.devnet.url, "anvil_stopImpersonatingAccount", [from]);
}

async function pay(key, accepts) {
  const payment = await signPayment(key, accepts);
  const res = await fetch(gateway.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(payment) } });
  const required = res.status === 402 ? unb64(res.headers.get("payment-required")) : null;
  const body = res.status === 402 ? await res.json() : await res.arrayBuffer();
  return { status: res.status, reason: required?.error, message: body.message };
}

test("a payer that drains its balance before settlement costs at most its limit and is then refused", async () => {
  const accepts = unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
  const key = "0x" + randomBytes(32).toString("hex");
  const payer = privateKeyToAccount(key).address;
  await transferFrom(devAccount(0).address, payer, 5000n);

  for (let i = 0; i < 3; i++) assert.equal((await pay(key, accepts)).status, 200, `payment ${i}`);
  const over = await pay(key, accepts);
  assert.equal(over.status, 402, "a fourth unsettled payment is over the $0.003 limit");
  assert.equal(over.reason, "invalid_transaction_state");
  assert.match(over.message, /limit is 3000/);

  // Between verification and settlement the payer moves its whole balance away.
  await transferFrom(payer, devAccount(1).address, 5000n);
  assert.equal(await balanceOf(env.devnet.url, payer), 0n);

  const failed = await eventually(() => {
    const out = runCli(["payments", "--journal", journalPath, "list", "--payer", payer, "--state", "failed"]);
    const rows = out.stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
    return rows.length === 3 && rows;
  }, 30_000, "the three payments fail to settle");
  assert.ok(failed.every((p) => /exceeds balance/.test(p.reason)), JSON.stringify(failed));
  assert.equal(await balanceOf(env.devnet.url, payTo), 0n, "the operator lost exactly the three it served: 3000, the limit");

  // Its exposure is back to zero, but it is refused until the block expires.
  await transferFrom(devAccount(0).address, payer, 5000n);
  const blocked = await pay(key, accepts);
  assert.equal(blocked.status, 402);
  assert.equal(blocked.reason, "invalid_exact_evm_insufficient_balance");
  assert.match(blocked.message, /refused until/);

  // Other payers are not affected.
  assert.equal((await pay(devPrivateKey(7), accepts)).status, 200);

  // The block is in the journal, where an operator clears it while the gateway runs.
  const listed = runCli(["payments", "--journal", journalPath, "blocked"]).stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(listed.map((b) => b.payer), [payer]);
  assert.match(listed[0].reason, /exceeds balance/);
  const cleared = runCli(["payments", "--journal", journalPath, "unblock", "--payer", payer]);
  assert.equal(cleared.status, 0, cleared.stderr);
  assert.match(cleared.stdout, /unblocked/);
  await eventually(async () => (await pay(key, accepts)).status === 200, 5_000, "the unblocked payer is served again");
});

test("with the balance check (the default), a payer's cached balance less what it owes must cover each payment", async () => {
  const checked = await startTestGateway(env, {
    payTo,
    settlement: { max_wait_ms: 600_000 },
    extraYaml: "exposure: { balance_cache_seconds: 60 }\n",
  });
  try {
    const accepts = unb64((await fetch(checked.base + "/weather")).headers.get("payment-required")).accepts[0];
    const key = "0x" + randomBytes(32).toString("hex");
    await transferFrom(devAccount(0).address, privateKeyToAccount(key).address, 2000n);
    const send = async () => {
      const res = await fetch(checked.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(await signPayment(key, accepts)) } });
      const reason = res.status === 402 ? unb64(res.headers.get("payment-required")).error : undefined;
      return { status: res.status, reason, body: await res.text() };
    };
    // The first payment waits for the payer's balance to be read; later ones use the cache.
    assert.equal((await send()).status, 200);
    assert.equal((await send()).status, 200, "2000 held covers 1000 owed plus 1000");
    // 2000 held, 2000 owed unsettled: a third 1000 is not covered.
    const third = await send();
    assert.equal(third.status, 402);
    assert.equal(third.reason, "invalid_exact_evm_insufficient_balance");
    assert.match(JSON.parse(third.body).message, /does not cover 2000 micro-USD unsettled/);
  } finally {
    await checked.stop();
  }
});
