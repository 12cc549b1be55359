// A payer that asks the escrow to withdraw from a batch-settlement channel must not take back
// what it owes: the gateway watches `WithdrawInitiated` and claims the channel at once, long
// before its claim interval and before the withdraw delay ends. Operators see the channel,
// its unclaimed value and its withdraw deadline through the admin API and the CLI. A client
// restarted without its channel state carries on through the corrective 402. Unclaimed
// voucher value counts against the exposure limits until it is claimed, across a restart.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createWalletClient, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { decodePaymentResponseHeader } from "@x402/fetch";
import { channelClient as officialChannelClient, channelRoute } from "./channel-client.mjs";
import { devPrivateKey, rpc, USDC_ADDRESS, BATCH_SETTLEMENT_ADDRESS, BATCH_SETTLEMENT_ABI } from "../../deploy/devnet/devnet.mjs";
import { startChainAndUpstream, startTestGateway, freshAddress, balanceOf, eventually, runCli, unb64 } from "./harness.mjs";

const decodePaymentRequired = (res) => unb64(res.headers.get("payment-required"));

const PRICE = 1000n;
const DEPOSIT = 100_000n; // min_deposit $0.1
const ZERO_SALT = `0x${"00".repeat(32)}`;
const ROUTE = channelRoute("metered", "/echo/{name}");

let env;
let gateway;
const payTo = freshAddress();
const journalPath = join(mkdtempSync(join(tmpdir(), "x402-withdraw-")), "journal.db");

before(async () => {
  env = await startChainAndUpstream();
  gateway = await start();
});

// Claims would wait an hour: only a payer's withdrawal can make one happen during these tests.
function start() {
  return startTestGateway(env, {
    payTo,
    extraRoutes: ROUTE,
    extraYaml: `exposure:\n  max_unsettled_per_payer: "$0.006"\n`,
    admin: true,
    settlement: { journal_path: journalPath, channels: { claim_interval_seconds: 3600, refresh_interval_seconds: 300 } },
  });
}

async function exposureOf(payer) {
  const body = await (await gateway.admin("/exposure")).json();
  return body.topPayers.find((entry) => entry.payer === payer)?.usdMicros ?? 0;
}

after(async () => {
  if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway?.logs());
  await gateway?.stop();
  await env?.stop();
});

function channelClient(privateKey) {
  return officialChannelClient(env.devnet.url, privateKey);
}

async function payAll(pay, count) {
  let receipt;
  for (let i = 0; i < count; i += 1) {
    const res = await pay(gateway.base + "/echo/metered");
    assert.equal(res.status, 200, `request ${i}: ${res.status} ${await res.clone().text()}`);
    await res.arrayBuffer();
    receipt = decodePaymentResponseHeader(res.headers.get("payment-response"));
  }
  return receipt;
}

async function listed(channelId) {
  const body = await (await gateway.admin("/channels")).json();
  return body.channels.find((channel) => channel.channelId === channelId);
}

async function escrow(publicClient, functionName, args, account) {
  if (!account) return publicClient.readContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: BATCH_SETTLEMENT_ABI, functionName, args });
  const wallet = createWalletClient({ account, transport: http(env.devnet.url) });
  const hash = await wallet.writeContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: BATCH_SETTLEMENT_ABI, functionName, args, chain: null });
  const receipt = await publicClient.waitForTransactionReceipt({ hash });
  assert.equal(receipt.status, "success", `${functionName} mined without reverting`);
  return receipt;
}

test("a client restarted without its channel state carries on the same channel, charged once per request", { timeout: 60_000 }, async () => {
  const first = channelClient(devPrivateKey(4));
  const opened = await payAll(first.pay, 3);
  const channelId = opened.extra.channelState.channelId;
  // A new process of the same payer: no local state, so its first voucher is on the wrong base.
  const restarted = channelClient(devPrivateKey(4));
  const carried = await payAll(restarted.pay, 2);
  assert.equal(carried.extra.channelState.channelId, channelId, "the same channel, no second deposit");
  assert.equal(carried.extra.channelState.chargedCumulativeAmount, String(5n * PRICE));
  const channel = await listed(channelId);
  assert.equal(channel.charged, String(5n * PRICE));
  assert.equal(channel.deposit, String(DEPOSIT), "one deposit only");
});

test("unclaimed voucher value counts against the payer's exposure limit, across a kill -9, until it is claimed", { timeout: 120_000 }, async () => {
  const { account, pay } = channelClient(devPrivateKey(5));
  const receipt = await payAll(pay, 6);
  const channelId = receipt.extra.channelState.channelId;
  assert.equal(await exposureOf(account.address), 6000);
  const refused = await pay(gateway.base + "/echo/metered");
  assert.equal(refused.status, 402, "a seventh request would put $0.007 unclaimed on a $0.006 limit");
  const refusal = decodePaymentRequired(refused);
  assert.equal(refusal.error, "invalid_transaction_state");
  assert.match(await refused.text(), /limit is 6000/);
  assert.equal((await listed(channelId)).charged, String(6n * PRICE), "nothing charged for the refused request");

  await gateway.stop("SIGKILL");
  gateway = await start();
  assert.equal(await exposureOf(account.address), 6000, "restored from the journal");
  assert.equal((await pay(gateway.base + "/echo/metered")).status, 402, "still refused after the restart");

  // An operator claims now: the value is on-chain, no longer owed, and the payer may pay again.
  const payToBefore = await balanceOf(env.devnet.url, payTo);
  const claim = await gateway.admin("/channels/claim", { method: "POST" });
  assert.equal(claim.status, 202);
  await eventually(async () => (await exposureOf(account.address)) === 0, 30_000, "claimed value no longer counts");
  assert.ok((await balanceOf(env.devnet.url, payTo)) - payToBefore >= 6n * PRICE, "the claim paid payTo");
  const served = await pay(gateway.base + "/echo/metered");
  assert.equal(served.status, 200, "room again once claimed");
});

test("POST /drain claims every channel at once, ahead of a shutdown", { timeout: 120_000 }, async () => {
  const { pay } = channelClient(devPrivateKey(6));
  const receipt = await payAll(pay, 3);
  const channelId = receipt.extra.channelState.channelId;
  assert.equal((await listed(channelId)).unclaimed, String(3n * PRICE), "claims wait an hour here");
  const payToBefore = await balanceOf(env.devnet.url, payTo);
  const drain = await gateway.admin("/drain", { method: "POST" });
  assert.equal(drain.status, 200);
  await eventually(async () => (await listed(channelId)).unclaimed === "0", 30_000, "the drain claimed the channel");
  assert.ok((await balanceOf(env.devnet.url, payTo)) - payToBefore >= 3n * PRICE, "the claim paid payTo");
  // A drained gateway is on its way out: the next test gets a fresh one on the same journal.
  await gateway.stop();
  gateway = await start();
});

// Last: it moves the chain's clock past the withdraw delay.
test("a payer that initiates a withdrawal is claimed before the delay ends, and keeps only what it did not spend", { timeout: 120_000 }, async () => {
  const { account, publicClient, pay } = channelClient(devPrivateKey(3));
  const payToBefore = await balanceOf(env.devnet.url, payTo);
  const receipt = await payAll(pay, 5);
  const channelId = receipt.extra.channelState.channelId;
  const owed = 5n * PRICE;

  const channel = await listed(channelId);
  assert.equal(channel.payer, account.address);
  assert.equal(channel.payTo, payTo);
  assert.deepEqual([channel.deposit, channel.charged, channel.claimed, channel.unclaimed], [String(DEPOSIT), String(owed), "0", String(owed)]);
  assert.equal(channel.withdrawDeadline, null);
  const cli = runCli(["channels", "--journal", journalPath, "--payer", account.address]);
  assert.equal(cli.status, 0, cli.stderr);
  const fromCli = cli.stdout.trim().split("\n").map((line) => JSON.parse(line));
  assert.deepEqual(fromCli.map((c) => [c.channelId, c.charged, c.unclaimed]), [[channelId, String(owed), String(owed)]]);

  // The payer asks for everything back, what it owes included (the escrow allows it).
  const settlerAddress = privateKeyToAccount(devPrivateKey(0)).address;
  const config = { payer: account.address, payerAuthorizer: account.address, receiver: payTo, receiverAuthorizer: settlerAddress, token: USDC_ADDRESS, withdrawDelay: 900, salt: ZERO_SALT };
  assert.equal(await exposureOf(account.address), 5000, "unclaimed vouchers count against the payer's limit");
  const initiated = await escrow(publicClient, "initiateWithdraw", [config, DEPOSIT], account);
  const { timestamp } = await publicClient.getBlock({ blockNumber: initiated.blockNumber });

  await eventually(async () => (await escrow(publicClient, "channels", [channelId]))[1] === owed, 30_000, "the gateway claimed the channel after the withdrawal request");
  await eventually(async () => (await balanceOf(env.devnet.url, payTo)) - payToBefore === owed, 30_000, "and settled the claim to payTo");
  await eventually(async () => (await listed(channelId))?.withdrawDeadline === Number(timestamp) + 900, 10_000, "the admin API shows the deadline");
  await eventually(async () => (await listed(channelId)).unclaimed === "0", 10_000, "the gateway read its claim back");
  await eventually(async () => (await exposureOf(account.address)) === 0, 10_000, "claimed value no longer counts");

  await rpc(env.devnet.url, "evm_increaseTime", [900]);
  await rpc(env.devnet.url, "evm_mine", []);
  const payerBefore = await balanceOf(env.devnet.url, account.address);
  await escrow(publicClient, "finalizeWithdraw", [config], account);
  assert.equal(await balanceOf(env.devnet.url, account.address), payerBefore + DEPOSIT - owed, "the payer gets back only what it did not spend");
  assert.equal((await balanceOf(env.devnet.url, payTo)) - payToBefore, owed, "payTo keeps every served request");
  const metrics = await (await gateway.admin("/metrics")).text();
  assert.match(metrics, /x402_channel_claims_total\{network="eip155:84532",outcome="mined"\} [1-9]/);
  assert.match(metrics, /x402_channel_claim_gas_used_total\{network="eip155:84532"\} [1-9]/);
});
