// The dev chain's batch-settlement contracts (deploy/devnet/contracts/BatchSettlement.sol and
// DepositCollector.sol, this project's own implementation) driven by the OFFICIAL client,
// @x402/evm's BatchSettlementEvmScheme: its deposit payload goes on-chain through the escrow
// and the ERC-3009 collector, its vouchers are claimed and settled, and a payer's timed
// withdrawal returns only what was not claimed. Also checks the ABI against the official
// package's ABI fragments, and prints the gas of each operation.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import {
  createPublicClient, createWalletClient, http, encodeAbiParameters, encodeFunctionData, parseEventLogs,
  toFunctionSelector, toEventSelector, getAddress, parseSignature, keccak256, toHex, hashTypedData,
} from "viem";
import { baseSepolia } from "viem/chains";
import { toClientEvmSigner, claimBatchTypes, BATCH_SETTLEMENT_DOMAIN } from "@x402/evm";
import { BatchSettlementEvmScheme, computeChannelId, signVoucher } from "@x402/evm/batch-settlement/client";
import {
  startDevnet, devAccount, rpc, balanceOf, USDC_ADDRESS, TEST_USDC_ABI, NETWORK, CHAIN_ID,
  BATCH_SETTLEMENT_ADDRESS, DEPOSIT_COLLECTOR_ADDRESS, BATCH_SETTLEMENT_ABI, DEPOSIT_COLLECTOR_ABI,
} from "../../deploy/devnet/devnet.mjs";
import { freePort, freshAddress } from "./harness.mjs";

const PRICE = 1000n;
const MIN_DEPOSIT = 10_000n;
const settler = devAccount(0); // the receiverAuthorizer, and the sender of deposits, claims and settles
let devnet;
let publicClient;
let wallet;
const gas = {};

before(async () => {
  devnet = await startDevnet({ port: await freePort(), fundedAccounts: 20 });
  const chain = { ...baseSepolia, rpcUrls: { default: { http: [devnet.url] } } };
  publicClient = createPublicClient({ chain, transport: http(devnet.url) });
  wallet = createWalletClient({ chain, transport: http(devnet.url), account: settler });
});

after(async () => {
  if (Object.keys(gas).length > 0) {
    console.log("batch-settlement gas (receipt.gasUsed, whole transaction):");
    for (const [what, used] of Object.entries(gas)) console.log(`  ${what.padEnd(46)} ${used}`);
  }
  await devnet?.stop();
});

function requirementsFor(payTo) {
  return {
    scheme: "batch-settlement",
    network: NETWORK,
    amount: PRICE.toString(),
    asset: USDC_ADDRESS,
    payTo,
    maxTimeoutSeconds: 300,
    extra: {
      receiverAuthorizer: settler.address,
      withdrawDelay: 900,
      name: "USDC",
      version: "2",
      minDeposit: MIN_DEPOSIT.toString(),
    },
  };
}

/** A payer using the official client with an in-memory channel store. */
function payerClient(index) {
  const account = devAccount(index);
  return { account, scheme: new BatchSettlementEvmScheme(toClientEvmSigner(account, publicClient)) };
}

/** ChannelConfig as the contract's tuple. */
function onChainConfig(config) {
  return {
    payer: config.payer,
    payerAuthorizer: config.payerAuthorizer,
    receiver: config.receiver,
    receiverAuthorizer: config.receiverAuthorizer,
    token: config.token,
    withdrawDelay: Number(config.withdrawDelay),
    salt: config.salt,
  };
}

const AUTHORIZATION_FIELDS = [
  { name: "from", type: "address" }, { name: "to", type: "address" }, { name: "value", type: "uint256" },
  { name: "validAfter", type: "uint256" }, { name: "validBefore", type: "uint256" }, { name: "nonce", type: "bytes32" },
];

/** Sends a TestUSDC call from `account` (with the dev chain's ether) and returns the receipt. */
async function sendToken(account, functionName, args) {
  const walletFor = createWalletClient({ chain: wallet.chain, transport: http(devnet.url), account });
  const hash = await walletFor.writeContract({ address: USDC_ADDRESS, abi: TEST_USDC_ABI, functionName, args });
  return publicClient.waitForTransactionReceipt({ hash });
}

const read = (functionName, args) =>
  publicClient.readContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: BATCH_SETTLEMENT_ABI, functionName, args });

async function send(functionName, args, { account = settler } = {}) {
  const walletFor = account === settler
    ? wallet
    : createWalletClient({ chain: wallet.chain, transport: http(devnet.url), account });
  const hash = await walletFor.writeContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: BATCH_SETTLEMENT_ABI, functionName, args });
  const receipt = await publicClient.waitForTransactionReceipt({ hash });
  assert.equal(receipt.status, "success", `${functionName} was mined without reverting`);
  return receipt;
}

/** Simulates a call that must revert with `errorName`. */
async function assertReverts(functionName, args, errorName, { account = settler } = {}) {
  await assert.rejects(
    publicClient.simulateContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: BATCH_SETTLEMENT_ABI, functionName, args, account }),
    (error) => {
      assert.match(String(error.message), new RegExp(`\\b${errorName}\\b`), `${functionName} reverts with ${errorName}`);
      return true;
    },
  );
}

const events = (receipt, eventName) =>
  parseEventLogs({ abi: BATCH_SETTLEMENT_ABI, logs: receipt.logs, eventName });

/** deposit(config, amount, collector, collectorData) for a client's deposit payload, sent by the settler. */
async function submitDeposit(payload) {
  assert.equal(payload.type, "deposit");
  const auth = payload.deposit.authorization.erc3009Authorization;
  const collectorData = encodeAbiParameters(
    [{ type: "uint256" }, { type: "uint256" }, { type: "uint256" }, { type: "bytes" }],
    [BigInt(auth.validAfter), BigInt(auth.validBefore), BigInt(auth.salt), auth.signature],
  );
  return send("deposit", [onChainConfig(payload.channelConfig), BigInt(payload.deposit.amount), DEPOSIT_COLLECTOR_ADDRESS, collectorData]);
}

/** What a server answers after charging the full price: advances the client's cumulative. */
async function acknowledge(scheme, paymentPayload, requirements) {
  const { voucher } = paymentPayload.payload;
  await scheme.schemeHooks.onPaymentResponse({
    paymentPayload,
    requirements,
    settleResponse: {
      success: true,
      transaction: "",
      network: NETWORK,
      payer: paymentPayload.payload.channelConfig.payer,
      amount: "",
      extra: {
        chargedAmount: requirements.amount,
        channelState: {
          channelId: voucher.channelId,
          balance: "0",
          totalClaimed: "0",
          withdrawRequestedAt: 0,
          refundNonce: "0",
          chargedCumulativeAmount: voucher.maxClaimableAmount,
        },
      },
    },
  });
}

/** One paid request: the client's payload (deposit + voucher, or voucher), deposited if needed, acknowledged. */
async function pay(scheme, requirements) {
  const paymentPayload = await scheme.createPaymentPayload(2, requirements);
  let receipt;
  if (paymentPayload.payload.type === "deposit") receipt = await submitDeposit(paymentPayload.payload);
  await acknowledge(scheme, paymentPayload, requirements);
  return { payload: paymentPayload.payload, receipt };
}

const claimRow = (payload) => ({
  voucher: { channel: onChainConfig(payload.channelConfig), maxClaimableAmount: BigInt(payload.voucher.maxClaimableAmount) },
  signature: payload.voucher.signature,
  totalClaimed: BigInt(payload.voucher.maxClaimableAmount),
});

/** The official package's ABI fragments for the escrow (not exported: read from its dist). */
function officialAbi() {
  const require = createRequire(import.meta.url);
  const dist = join(dirname(require.resolve("@x402/evm")), "batch-settlement", "facilitator", "index.js");
  const text = readFileSync(dist, "utf8");
  const start = text.indexOf("var channelConfigComponents = [");
  const abiStart = text.indexOf("var batchSettlementABI = [", start);
  const end = text.indexOf("\n];", abiStart);
  assert.ok(start >= 0 && abiStart > start && end > abiStart, "found the ABI in @x402/evm's dist");
  return new Function(`${text.slice(start, end + 3)}\nreturn batchSettlementABI;`)();
}

test("the escrow's ABI has every function and event of the official client's ABI, same selectors", () => {
  const selectorOf = (i) => (i.type === "function" ? toFunctionSelector(i) : toEventSelector(i));
  const ours = new Map(BATCH_SETTLEMENT_ABI.filter((i) => i.type === "function" || i.type === "event")
    .map((i) => [selectorOf(i), i]));
  const official = officialAbi();
  assert.ok(official.length >= 15);
  for (const item of official) {
    const mine = ours.get(selectorOf(item));
    assert.ok(mine, `BatchSettlement has the official ${item.type} ${item.name} (${selectorOf(item)})`);
    assert.equal(mine.name, item.name);
    if (item.type === "function") {
      assert.deepEqual(mine.outputs.map((o) => o.type), item.outputs.map((o) => o.type), `${item.name} returns the same types`);
    } else {
      assert.deepEqual(mine.inputs.map((o) => o.indexed ?? false), item.inputs.map((o) => o.indexed ?? false), `${item.name} indexes the same fields`);
    }
  }
  // The facts the gateway relies on, from the official contract.
  const selectors = Object.fromEntries(BATCH_SETTLEMENT_ABI.filter((i) => i.type === "function").map((i) => [i.name, toFunctionSelector(i)]));
  assert.equal(selectors.deposit, "0x140f1e75");
  assert.equal(selectors.claim, "0x29237b0c");
  assert.equal(selectors.claimWithSignature, "0xe43ce1f2");
  assert.equal(selectors.settle, "0x9db32a8f");
  assert.equal(selectors.initiateWithdraw, "0xcf5cf3dc");
  assert.equal(selectors.finalizeWithdraw, "0xe88377b1");
  assert.equal(selectors.refund, "0xdce4bfae");
  assert.equal(selectors.refundWithSignature, "0xb77433e9");
  assert.equal(selectors.multicall, "0xac9650d8");
  assert.equal(selectors.channels, "0x7a7ebd7b");
  assert.equal(selectors.pendingWithdrawals, "0xb7f06ebe");
  assert.equal(selectors.getChannelId, "0x5e5e0b87");
  const topics = Object.fromEntries(BATCH_SETTLEMENT_ABI.filter((i) => i.type === "event").map((i) => [i.name, toEventSelector(i)]));
  assert.equal(topics.Deposited, "0x6c2a09353b5e75e70d0b9778b80a413809bb235d46c211811c474b3346791d89");
  assert.equal(topics.Claimed, "0x36bd546bb573e8921fdbfd934bbed62d872796b01792cd240cce27f79dd3eddd");
  assert.equal(topics.Settled, "0x7337b4386b690fdb8ba66905b92b9d45d33bc6626ee2620c905fb150ec0cc47d");
  assert.equal(topics.WithdrawInitiated, "0xe4280d0d903c7f258f62b07c62f262377cbaa23f7791d78126e6446e0f0e3c23");
  assert.equal(topics.WithdrawFinalized, "0x546ce1e2242cd930c196bd08b894443562d709b4fffe4f028a75a6d233efc6e3");
  assert.equal(topics.ChannelCreated, "0x69d8248d5566bdb2ebc4d218970710d8378a2ff9b709a999e052b71970f808fa");
  // The token overload the ERC-3009 collector calls (FiatToken v2.2's bytes-signature one).
  assert.ok(TEST_USDC_ABI.some((i) => i.type === "function" && toFunctionSelector(i) === "0x88b7ab63"), "TestUSDC has receiveWithAuthorization(...,bytes)");
  const collect = DEPOSIT_COLLECTOR_ABI.find((i) => i.name === "collect");
  assert.equal(toFunctionSelector(collect), toFunctionSelector("function collect(address,address,uint256,bytes32,bytes)"));
});

test("the official ClaimBatch types give the digest the gateway's claim_batch_hash computes (same entries as its unit test)", () => {
  const claims = [
    { channelId: `0x${"11".repeat(32)}`, maxClaimableAmount: 2000n, totalClaimed: 1500n },
    { channelId: `0x${"22".repeat(32)}`, maxClaimableAmount: 5000n, totalClaimed: 5000n },
  ];
  const domain = { ...BATCH_SETTLEMENT_DOMAIN, chainId: 84532, verifyingContract: BATCH_SETTLEMENT_ADDRESS };
  const digest = hashTypedData({ domain, types: claimBatchTypes, primaryType: "ClaimBatch", message: { claims } });
  assert.equal(digest, "0x3c79a54b3a7c79080cd8c5944e8126f7c9b4037577786111133001b1b8a87a11");
});

test("the contracts sit at the canonical addresses with the scheme's EIP-712 domain", async () => {
  const [fields, name, version, chainId, verifyingContract] = await read("eip712Domain", []);
  assert.equal(fields, "0x0f");
  assert.equal(name, "x402 Batch Settlement");
  assert.equal(version, "1");
  assert.equal(chainId, BigInt(CHAIN_ID));
  assert.equal(verifyingContract, getAddress(BATCH_SETTLEMENT_ADDRESS));
  const escrow = await publicClient.readContract({ address: DEPOSIT_COLLECTOR_ADDRESS, abi: DEPOSIT_COLLECTOR_ABI, functionName: "x402BatchSettlement" });
  assert.equal(escrow, getAddress(BATCH_SETTLEMENT_ADDRESS));
});

test("TestUSDC's EIP-3009 entry points: both overloads of transfer- and receiveWithAuthorization", async () => {
  const from = devAccount(4);
  const payee = devAccount(5);
  const validBefore = BigInt(Math.floor(Date.now() / 1000) + 3600);
  const sign = (primaryType, to, value, nonce) => from.signTypedData({
    domain: { name: "USDC", version: "2", chainId: CHAIN_ID, verifyingContract: USDC_ADDRESS },
    types: { [primaryType]: AUTHORIZATION_FIELDS },
    primaryType,
    message: { from: from.address, to, value, validAfter: 0n, validBefore, nonce },
  });
  const nonce = (label) => keccak256(toHex(`testusdc-${label}-${Date.now()}`));
  const before = await balanceOf(devnet.url, payee.address);

  let n = nonce("t-bytes");
  let signature = await sign("TransferWithAuthorization", payee.address, 1n, n);
  assert.equal((await sendToken(settler, "transferWithAuthorization", [from.address, payee.address, 1n, 0n, validBefore, n, signature])).status, "success");
  n = nonce("t-vrs");
  signature = await sign("TransferWithAuthorization", payee.address, 2n, n);
  let { v, r, s } = parseSignature(signature);
  assert.equal((await sendToken(settler, "transferWithAuthorization", [from.address, payee.address, 2n, 0n, validBefore, n, Number(v), r, s])).status, "success");
  n = nonce("r-vrs");
  signature = await sign("ReceiveWithAuthorization", payee.address, 4n, n);
  ({ v, r, s } = parseSignature(signature));
  // Only the payee may execute a receive authorization.
  await assert.rejects(
    publicClient.simulateContract({ address: USDC_ADDRESS, abi: TEST_USDC_ABI, functionName: "receiveWithAuthorization", args: [from.address, payee.address, 4n, 0n, validBefore, n, Number(v), r, s], account: settler }),
    /caller must be the payee/,
  );
  assert.equal((await sendToken(payee, "receiveWithAuthorization", [from.address, payee.address, 4n, 0n, validBefore, n, Number(v), r, s])).status, "success");
  n = nonce("r-bytes");
  signature = await sign("ReceiveWithAuthorization", payee.address, 8n, n);
  assert.equal((await sendToken(payee, "receiveWithAuthorization", [from.address, payee.address, 8n, 0n, validBefore, n, signature])).status, "success");
  // A transfer authorization is no receive authorization.
  n = nonce("mixed");
  signature = await sign("TransferWithAuthorization", payee.address, 16n, n);
  await assert.rejects(
    publicClient.simulateContract({ address: USDC_ADDRESS, abi: TEST_USDC_ABI, functionName: "receiveWithAuthorization", args: [from.address, payee.address, 16n, 0n, validBefore, n, signature], account: payee }),
    /invalid signature/,
  );
  assert.equal(await balanceOf(devnet.url, payee.address), before + 15n);
});

// One channel through its life: deposit, vouchers, claim + settle, top-up, replays and bad claims.
const payTo = freshAddress();
const requirements = requirementsFor(payTo);
const payerA = payerClient(2);
let channelA; // { config, id }
let lastA; // the latest payload of payer A

test("the official client's deposit payload deposits through the escrow and the ERC-3009 collector", async () => {
  const payerBefore = await balanceOf(devnet.url, payerA.account.address);
  const { payload, receipt } = await pay(payerA.scheme, requirements);
  assert.equal(payload.type, "deposit");
  assert.equal(payload.deposit.amount, MIN_DEPOSIT.toString(), "the client deposits the announced minDeposit");
  assert.equal(payload.voucher.maxClaimableAmount, PRICE.toString());
  gas["first deposit (ERC-3009)"] = receipt.gasUsed;

  const config = onChainConfig(payload.channelConfig);
  const id = await read("getChannelId", [config]);
  assert.equal(id, payload.voucher.channelId.toLowerCase(), "the contract's channel id is the client's");
  assert.equal(id, computeChannelId(payload.channelConfig, NETWORK).toLowerCase());
  channelA = { config, id };
  lastA = payload;

  assert.deepEqual(await read("channels", [id]), [MIN_DEPOSIT, 0n]);
  assert.equal(await balanceOf(devnet.url, payerA.account.address), payerBefore - MIN_DEPOSIT);
  assert.equal(await balanceOf(devnet.url, BATCH_SETTLEMENT_ADDRESS), MIN_DEPOSIT);
  assert.equal(await balanceOf(devnet.url, DEPOSIT_COLLECTOR_ADDRESS), 0n, "the collector keeps nothing");
  const [created] = events(receipt, "ChannelCreated");
  assert.equal(created.args.channelId, id);
  assert.equal(created.args.config.payer, payerA.account.address);
  const [deposited] = events(receipt, "Deposited");
  assert.deepEqual(deposited.args, { channelId: id, sender: settler.address, amount: MIN_DEPOSIT, newBalance: MIN_DEPOSIT });
});

test("vouchers for N requests, claimed and settled in one multicall, pay payTo exactly N x price", async () => {
  const N = 5n;
  for (let i = 2n; i <= N; i++) {
    const { payload } = await pay(payerA.scheme, requirements);
    assert.equal(payload.type, "voucher");
    assert.equal(payload.voucher.maxClaimableAmount, (i * PRICE).toString(), "vouchers are cumulative");
    assert.equal(payload.voucher.channelId.toLowerCase(), channelA.id);
    lastA = payload;
  }
  const before = await balanceOf(devnet.url, payTo);
  const receipt = await send("multicall", [[
    encodeFunctionData({ abi: BATCH_SETTLEMENT_ABI, functionName: "claim", args: [[claimRow(lastA)]] }),
    encodeFunctionData({ abi: BATCH_SETTLEMENT_ABI, functionName: "settle", args: [payTo, USDC_ADDRESS] }),
  ]]);
  gas["multicall(claim 1 row, settle)"] = receipt.gasUsed;
  assert.equal(await balanceOf(devnet.url, payTo), before + N * PRICE);
  assert.deepEqual(await read("channels", [channelA.id]), [MIN_DEPOSIT, N * PRICE]);
  assert.deepEqual(await read("receivers", [payTo, USDC_ADDRESS]), [N * PRICE, N * PRICE]);
  const [claimed] = events(receipt, "Claimed");
  assert.deepEqual(claimed.args, { channelId: channelA.id, sender: settler.address, claimAmount: N * PRICE, newTotalClaimed: N * PRICE });
  const [settled] = events(receipt, "Settled");
  assert.deepEqual(settled.args, { receiver: payTo, token: getAddress(USDC_ADDRESS), sender: settler.address, amount: N * PRICE });
});

test("a top-up deposit, then a claim and a settle as separate transactions", async () => {
  // Requests 6..10 fill the deposit; request 11 needs a top-up.
  for (let i = 6n; i <= 10n; i++) lastA = (await pay(payerA.scheme, requirements)).payload;
  assert.equal(lastA.type, "voucher");
  const { payload, receipt } = await pay(payerA.scheme, requirements);
  assert.equal(payload.type, "deposit", "the 11th request tops the channel up");
  assert.equal(payload.voucher.maxClaimableAmount, (11n * PRICE).toString());
  gas["top-up deposit"] = receipt.gasUsed;
  assert.equal(events(receipt, "ChannelCreated").length, 0, "a top-up creates no channel");
  lastA = payload;
  assert.deepEqual(await read("channels", [channelA.id]), [2n * MIN_DEPOSIT, 5n * PRICE]);

  const claim = await send("claim", [[claimRow(lastA)]]);
  gas["claim, 1 channel (raising its total)"] = claim.gasUsed;
  assert.deepEqual(await read("channels", [channelA.id]), [2n * MIN_DEPOSIT, 11n * PRICE]);
  const before = await balanceOf(devnet.url, payTo);
  const settle = await send("settle", [payTo, USDC_ADDRESS]);
  gas["settle"] = settle.gasUsed;
  assert.equal(await balanceOf(devnet.url, payTo), before + 6n * PRICE);
  assert.equal(await balanceOf(devnet.url, payTo), 11n * PRICE, "payTo got exactly 11 x price in all");
  // A settle with nothing to pay is a no-op.
  const idle = await send("settle", [payTo, USDC_ADDRESS]);
  assert.equal(events(idle, "Settled").length, 0);
});

test("a replayed voucher claims nothing more; bad claims revert", async () => {
  const replay = await send("claim", [[claimRow(lastA)]]);
  assert.equal(events(replay, "Claimed").length, 0);
  assert.deepEqual(await read("channels", [channelA.id]), [2n * MIN_DEPOSIT, 11n * PRICE]);
  assert.deepEqual(await read("receivers", [payTo, USDC_ADDRESS]), [11n * PRICE, 11n * PRICE]);

  // A voucher signed by a key other than the channel's payerAuthorizer.
  const forged = await signVoucher(devAccount(9), channelA.id, (12n * PRICE).toString(), NETWORK);
  assert.notEqual(forged.signature, undefined);
  const forgedRow = { ...claimRow(lastA), voucher: { ...claimRow(lastA).voucher, maxClaimableAmount: 12n * PRICE }, signature: forged.signature, totalClaimed: 12n * PRICE };
  await assertReverts("claim", [[forgedRow]], "InvalidSignature");
  // The payer's own signature over another amount does not cover this one either.
  await assertReverts("claim", [[{ ...forgedRow, signature: lastA.voucher.signature }]], "InvalidSignature");

  // A genuine voucher above the escrowed balance.
  const above = 2n * MIN_DEPOSIT + PRICE;
  const big = await signVoucher(toClientEvmSigner(payerA.account), channelA.id, above.toString(), NETWORK);
  const bigRow = { ...claimRow(lastA), voucher: { ...claimRow(lastA).voucher, maxClaimableAmount: above }, signature: big.signature, totalClaimed: above };
  await assertReverts("claim", [[bigRow]], "ClaimExceedsBalance");
  // Claiming more than the voucher's ceiling.
  await assertReverts("claim", [[{ ...claimRow(lastA), totalClaimed: 12n * PRICE }]], "ClaimExceedsCeiling");
  // Only the receiver side may claim.
  await assertReverts("claim", [[claimRow(lastA)]], "NotAuthorizedToClaim", { account: devAccount(3) });
  await assertReverts("claim", [[]], "EmptyBatch");
  // A reverting call fails the whole multicall.
  await assertReverts("multicall", [[
    encodeFunctionData({ abi: BATCH_SETTLEMENT_ABI, functionName: "settle", args: [payTo, USDC_ADDRESS] }),
    encodeFunctionData({ abi: BATCH_SETTLEMENT_ABI, functionName: "claim", args: [[bigRow]] }),
  ]], "ClaimExceedsBalance");
  // The collector takes calls from the escrow only.
  await assert.rejects(
    publicClient.simulateContract({
      address: DEPOSIT_COLLECTOR_ADDRESS, abi: DEPOSIT_COLLECTOR_ABI, functionName: "collect",
      args: [payerA.account.address, USDC_ADDRESS, 1n, channelA.id, "0x"], account: settler,
    }),
    /OnlyX402BatchSettlement/,
  );
  assert.deepEqual(await read("channels", [channelA.id]), [2n * MIN_DEPOSIT, 11n * PRICE], "nothing changed");
});

test("ten channels claimed in one transaction", async () => {
  const payTo10 = freshAddress();
  const req = requirementsFor(payTo10);
  const rows = [];
  for (let index = 10; index < 20; index++) {
    const { scheme } = payerClient(index);
    const first = await pay(scheme, req);
    assert.equal(first.payload.type, "deposit");
    const second = await pay(scheme, req);
    assert.equal(second.payload.voucher.maxClaimableAmount, (2n * PRICE).toString());
    rows.push(claimRow(second.payload));
  }
  const receipt = await send("claim", [rows]);
  gas["claim, 10 channels in one tx (first claims)"] = receipt.gasUsed;
  assert.equal(events(receipt, "Claimed").length, 10);
  assert.deepEqual(await read("receivers", [payTo10, USDC_ADDRESS]), [20n * PRICE, 0n]);
  await send("settle", [payTo10, USDC_ADDRESS]);
  assert.equal(await balanceOf(devnet.url, payTo10), 20n * PRICE);
});

const CHANNEL_DOMAIN = { name: "x402 Batch Settlement", version: "1", chainId: CHAIN_ID, verifyingContract: BATCH_SETTLEMENT_ADDRESS };

test("relayed claims (ClaimBatch signature) and cooperative refunds, direct and relayed", async () => {
  const payToR = freshAddress();
  const req = requirementsFor(payToR);
  const payer = payerClient(6);
  let last;
  for (let i = 0; i < 2; i++) last = (await pay(payer.scheme, req)).payload;
  const config = onChainConfig(last.channelConfig);
  const id = last.voucher.channelId.toLowerCase();
  const row = claimRow(last);

  const signBatch = (account, rows) => account.signTypedData({
    domain: CHANNEL_DOMAIN,
    types: {
      ClaimBatch: [{ name: "claims", type: "ClaimEntry[]" }],
      ClaimEntry: [
        { name: "channelId", type: "bytes32" }, { name: "maxClaimableAmount", type: "uint128" }, { name: "totalClaimed", type: "uint128" },
      ],
    },
    primaryType: "ClaimBatch",
    message: { claims: rows.map((r) => ({ channelId: id, maxClaimableAmount: r.voucher.maxClaimableAmount, totalClaimed: r.totalClaimed })) },
  });
  await assertReverts("claimWithSignature", [[row], await signBatch(devAccount(7), [row])], "InvalidSignature", { account: payer.account });
  const relayed = await send("claimWithSignature", [[row], await signBatch(settler, [row])], { account: payer.account });
  const [claimed] = events(relayed, "Claimed");
  assert.deepEqual(claimed.args, { channelId: id, sender: payer.account.address, claimAmount: 2n * PRICE, newTotalClaimed: 2n * PRICE });

  // Direct refund by the receiver side; the payer side may not.
  await assertReverts("refund", [config, 1n], "NotAuthorizedToRefund", { account: payer.account });
  await assertReverts("refund", [config, 0n], "ZeroRefund");
  const payerBefore = await balanceOf(devnet.url, payer.account.address);
  const direct = await send("refund", [config, 3n * PRICE]);
  assert.deepEqual(events(direct, "Refunded")[0].args, { channelId: id, sender: settler.address, amount: 3n * PRICE });
  assert.equal(await read("refundNonce", [id]), 1n);

  // Relayed refund of "everything": capped at the unclaimed rest; the nonce must be current.
  const signRefund = (nonce, amount) => settler.signTypedData({
    domain: CHANNEL_DOMAIN,
    types: { Refund: [{ name: "channelId", type: "bytes32" }, { name: "nonce", type: "uint256" }, { name: "amount", type: "uint128" }] },
    primaryType: "Refund",
    message: { channelId: id, nonce, amount },
  });
  const all = 2n ** 100n;
  await assertReverts("refundWithSignature", [config, all, 0n, await signRefund(0n, all)], "InvalidRefundNonce", { account: payer.account });
  const relayedRefund = await send("refundWithSignature", [config, all, 1n, await signRefund(1n, all)], { account: payer.account });
  const rest = MIN_DEPOSIT - 2n * PRICE - 3n * PRICE;
  assert.deepEqual(events(relayedRefund, "Refunded")[0].args, { channelId: id, sender: payer.account.address, amount: rest });
  assert.equal(await balanceOf(devnet.url, payer.account.address), payerBefore + 3n * PRICE + rest);
  assert.deepEqual(await read("channels", [id]), [2n * PRICE, 2n * PRICE]);
  await send("settle", [payToR, USDC_ADDRESS]);
  assert.equal(await balanceOf(devnet.url, payToR), 2n * PRICE);
});

test("a channel without a payerAuthorizer takes vouchers signed by the payer itself", async () => {
  const payer = devAccount(7);
  const payToZ = freshAddress();
  const config = {
    payer: payer.address, payerAuthorizer: "0x0000000000000000000000000000000000000000", receiver: payToZ,
    receiverAuthorizer: settler.address, token: USDC_ADDRESS, withdrawDelay: 900, salt: keccak256(toHex("zero-authorizer")),
  };
  const id = await read("getChannelId", [config]);
  assert.equal(id, computeChannelId(config, NETWORK).toLowerCase());
  const salt = BigInt(keccak256(toHex("deposit-salt")));
  const validBefore = BigInt(Math.floor(Date.now() / 1000) + 3600);
  const authorization = await payer.signTypedData({
    domain: { name: "USDC", version: "2", chainId: CHAIN_ID, verifyingContract: USDC_ADDRESS },
    types: { ReceiveWithAuthorization: AUTHORIZATION_FIELDS },
    primaryType: "ReceiveWithAuthorization",
    message: {
      from: payer.address, to: DEPOSIT_COLLECTOR_ADDRESS, value: MIN_DEPOSIT, validAfter: 0n, validBefore,
      nonce: keccak256(encodeAbiParameters([{ type: "bytes32" }, { type: "uint256" }], [id, salt])),
    },
  });
  const collectorData = encodeAbiParameters(
    [{ type: "uint256" }, { type: "uint256" }, { type: "uint256" }, { type: "bytes" }], [0n, validBefore, salt, authorization],
  );
  await send("deposit", [config, MIN_DEPOSIT, DEPOSIT_COLLECTOR_ADDRESS, collectorData]);
  // The same authorization cannot be used twice.
  await assertReverts("deposit", [config, MIN_DEPOSIT, DEPOSIT_COLLECTOR_ADDRESS, collectorData], "authorization is used or canceled");
  const voucher = await payer.signTypedData({
    domain: CHANNEL_DOMAIN, types: { Voucher: [{ name: "channelId", type: "bytes32" }, { name: "maxClaimableAmount", type: "uint128" }] },
    primaryType: "Voucher", message: { channelId: id, maxClaimableAmount: 4n * PRICE },
  });
  const row = { voucher: { channel: config, maxClaimableAmount: 4n * PRICE }, signature: voucher, totalClaimed: 4n * PRICE };
  await assertReverts("claim", [[{ ...row, signature: await devAccount(8).signTypedData({
    domain: CHANNEL_DOMAIN, types: { Voucher: [{ name: "channelId", type: "bytes32" }, { name: "maxClaimableAmount", type: "uint128" }] },
    primaryType: "Voucher", message: { channelId: id, maxClaimableAmount: 4n * PRICE },
  }) }]], "InvalidSignature");
  await send("claim", [[row]]);
  assert.deepEqual(await read("channels", [id]), [MIN_DEPOSIT, 4n * PRICE]);
});

// Last: it moves the chain clock past the client's deposit authorizations (validBefore = now + 300 s).
test("a payer's timed withdrawal: claims during the delay win, finalize returns only the unclaimed rest", async () => {
  const payToW = freshAddress();
  const req = requirementsFor(payToW);
  const payer = payerClient(3);
  let last;
  for (let i = 0; i < 3; i++) last = (await pay(payer.scheme, req)).payload;
  const config = onChainConfig(last.channelConfig);
  const id = last.voucher.channelId.toLowerCase();
  assert.deepEqual(await read("channels", [id]), [MIN_DEPOSIT, 0n]);
  const payerBefore = await balanceOf(devnet.url, payer.account.address);

  // Only the payer side may withdraw, and no more than is unclaimed.
  await assertReverts("initiateWithdraw", [config, MIN_DEPOSIT], "InvalidChannel");
  await assertReverts("initiateWithdraw", [config, MIN_DEPOSIT + 1n], "WithdrawAmountExceedsAvailable", { account: payer.account });
  const initiated = await send("initiateWithdraw", [config, MIN_DEPOSIT], { account: payer.account });
  gas["initiateWithdraw"] = initiated.gasUsed;
  const block = await publicClient.getBlock({ blockNumber: initiated.blockNumber });
  const [event] = events(initiated, "WithdrawInitiated");
  assert.deepEqual(event.args, { channelId: id, amount: MIN_DEPOSIT, finalizeAfter: Number(block.timestamp) + 900 });
  assert.deepEqual(await read("pendingWithdrawals", [id]), [MIN_DEPOSIT, Number(block.timestamp)]);
  await assertReverts("initiateWithdraw", [config, 1n], "WithdrawalAlreadyPending", { account: payer.account });
  await assertReverts("finalizeWithdraw", [config], "WithdrawDelayNotElapsed", { account: payer.account });

  // The receiver side claims the latest voucher before the delay ends.
  const claim = await send("claim", [[claimRow(last)]]);
  gas["claim, 1 channel (first claim)"] = claim.gasUsed;
  assert.deepEqual(await read("channels", [id]), [MIN_DEPOSIT, 3n * PRICE]);

  await rpc(devnet.url, "evm_increaseTime", [900]);
  await rpc(devnet.url, "evm_mine", []);
  await assertReverts("finalizeWithdraw", [config], "NotAuthorizedToFinalizeWithdraw");
  const finalized = await send("finalizeWithdraw", [config], { account: payer.account });
  gas["finalizeWithdraw"] = finalized.gasUsed;
  const rest = MIN_DEPOSIT - 3n * PRICE;
  const [done] = events(finalized, "WithdrawFinalized");
  assert.deepEqual(done.args, { channelId: id, sender: payer.account.address, amount: rest });
  assert.equal(await balanceOf(devnet.url, payer.account.address), payerBefore + rest, "the payer gets only the unclaimed rest");
  assert.deepEqual(await read("channels", [id]), [3n * PRICE, 3n * PRICE]);
  assert.deepEqual(await read("pendingWithdrawals", [id]), [0n, 0]);
  await assertReverts("finalizeWithdraw", [config], "WithdrawalNotPending", { account: payer.account });

  await send("settle", [payToW, USDC_ADDRESS]);
  assert.equal(await balanceOf(devnet.url, payToW), 3n * PRICE);
});
