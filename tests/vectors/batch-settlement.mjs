// Cross-implementation vectors for the `batch-settlement` scheme, produced by the official
// client (@x402/evm, pinned in package.json) and viem, for fixed keys, salts and clock.
// Output: crates/evm/tests/vectors/batch-settlement.json, checked by
// crates/evm/tests/batch_settlement_vectors.rs. Regenerate: node tests/vectors/batch-settlement.mjs
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { encodeAbiParameters, encodeFunctionData, getAddress, hashTypedData, keccak256, parseAbi } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { toClientEvmSigner, BATCH_SETTLEMENT_DOMAIN, BATCH_SETTLEMENT_ADDRESS, ERC3009_DEPOSIT_COLLECTOR_ADDRESS } from "@x402/evm";
import {
  computeChannelId,
  signVoucher,
  createBatchSettlementEIP3009DepositPayload,
} from "@x402/evm/batch-settlement/client";

// A fixed clock and fixed "random" bytes, so the vectors are reproducible.
const NOW = 1_800_000_000;
Date.now = () => NOW * 1000;
globalThis.crypto.getRandomValues = (array) => array.fill(0x42);

const USDC_BASE_SEPOLIA = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const USDC_BASE = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";
const PAYER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"; // anvil 2
const VOUCHER_KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"; // anvil 3

const escrowAbi = parseAbi([
  "struct ChannelConfig { address payer; address payerAuthorizer; address receiver; address receiverAuthorizer; address token; uint40 withdrawDelay; bytes32 salt; }",
  "struct Voucher { ChannelConfig channel; uint128 maxClaimableAmount; }",
  "struct VoucherClaim { Voucher voucher; bytes signature; uint128 totalClaimed; }",
  "function deposit(ChannelConfig config, uint128 amount, address collector, bytes collectorData)",
  "function claim(VoucherClaim[] voucherClaims)",
  "function settle(address receiver, address token)",
  "function multicall(bytes[] data) returns (bytes[] results)",
]);

const voucherTypes = { Voucher: [{ name: "channelId", type: "bytes32" }, { name: "maxClaimableAmount", type: "uint128" }] };
const receiveTypes = {
  ReceiveWithAuthorization: [
    { name: "from", type: "address" }, { name: "to", type: "address" }, { name: "value", type: "uint256" },
    { name: "validAfter", type: "uint256" }, { name: "validBefore", type: "uint256" }, { name: "nonce", type: "bytes32" },
  ],
};

const cases = [
  { name: "base-sepolia-default", chainId: 84532, token: USDC_BASE_SEPOLIA, tokenName: "USDC", tokenVersion: "2",
    withdrawDelay: 900, salt: "0x" + "00".repeat(32), voucherKey: null, price: "1000", deposit: "10000", maxClaimable: "1000" },
  { name: "base-delegated-voucher-signer", chainId: 8453, token: USDC_BASE, tokenName: "USD Coin", tokenVersion: "2",
    withdrawDelay: 86400, salt: "0x" + "ab".repeat(32), voucherKey: VOUCHER_KEY, price: "2500", deposit: "50000", maxClaimable: "7500" },
];

async function vector(c) {
  const payer = toClientEvmSigner(privateKeyToAccount(PAYER_KEY));
  const voucherSigner = c.voucherKey ? toClientEvmSigner(privateKeyToAccount(c.voucherKey)) : undefined;
  const network = `eip155:${c.chainId}`;
  const requirements = {
    scheme: "batch-settlement", network, amount: c.price, asset: c.token,
    payTo: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", maxTimeoutSeconds: 300,
    extra: { name: c.tokenName, version: c.tokenVersion, receiverAuthorizer: "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
             withdrawDelay: c.withdrawDelay, minDeposit: c.deposit },
  };
  const config = {
    payer: payer.address,
    payerAuthorizer: getAddress((voucherSigner ?? payer).address),
    receiver: requirements.payTo,
    receiverAuthorizer: requirements.extra.receiverAuthorizer,
    token: requirements.asset,
    withdrawDelay: c.withdrawDelay,
    salt: c.salt,
  };
  const channelId = computeChannelId(config, network);
  const domain = { ...BATCH_SETTLEMENT_DOMAIN, chainId: c.chainId, verifyingContract: getAddress(BATCH_SETTLEMENT_ADDRESS) };
  const voucherDigest = hashTypedData({ domain, types: voucherTypes, primaryType: "Voucher",
    message: { channelId, maxClaimableAmount: BigInt(c.maxClaimable) } });
  const { payload: deposit } = await createBatchSettlementEIP3009DepositPayload(
    payer, 2, requirements, config, c.deposit, c.maxClaimable, voucherSigner);
  const auth = deposit.deposit.authorization.erc3009Authorization;
  const depositNonce = keccak256(encodeAbiParameters([{ type: "bytes32" }, { type: "uint256" }], [channelId, BigInt(auth.salt)]));
  const depositDigest = hashTypedData({
    domain: { name: c.tokenName, version: c.tokenVersion, chainId: c.chainId, verifyingContract: getAddress(c.token) },
    types: receiveTypes, primaryType: "ReceiveWithAuthorization",
    message: { from: payer.address, to: getAddress(ERC3009_DEPOSIT_COLLECTOR_ADDRESS), value: BigInt(c.deposit),
               validAfter: BigInt(auth.validAfter), validBefore: BigInt(auth.validBefore), nonce: depositNonce },
  });
  const next = (BigInt(c.maxClaimable) + BigInt(c.price)).toString();
  const voucher = { type: "voucher", channelConfig: config, voucher: await signVoucher(voucherSigner ?? payer, channelId, next, network) };
  const collectorData = encodeAbiParameters([{ type: "uint256" }, { type: "uint256" }, { type: "uint256" }, { type: "bytes" }],
    [BigInt(auth.validAfter), BigInt(auth.validBefore), BigInt(auth.salt), auth.signature]);
  const contractConfig = { ...config, salt: config.salt };
  const claim = encodeFunctionData({ abi: escrowAbi, functionName: "claim", args: [[{
    voucher: { channel: contractConfig, maxClaimableAmount: BigInt(next) }, signature: voucher.voucher.signature, totalClaimed: BigInt(next) }]] });
  const settle = encodeFunctionData({ abi: escrowAbi, functionName: "settle", args: [config.receiver, config.token] });
  return {
    name: c.name, chainId: c.chainId, now: NOW, tokenName: c.tokenName, tokenVersion: c.tokenVersion,
    requirements, channelId, voucherDigest, depositNonce, depositDigest,
    depositPayload: deposit, voucherPayload: voucher,
    calldata: {
      deposit: encodeFunctionData({ abi: escrowAbi, functionName: "deposit",
        args: [contractConfig, BigInt(c.deposit), getAddress(ERC3009_DEPOSIT_COLLECTOR_ADDRESS), collectorData] }),
      claim, settle,
      multicall: encodeFunctionData({ abi: escrowAbi, functionName: "multicall", args: [[claim, settle]] }),
    },
  };
}

const out = join(dirname(fileURLToPath(import.meta.url)), "../../crates/evm/tests/vectors/batch-settlement.json");
const vectors = { generator: "@x402/evm batch-settlement client + viem (tests/vectors/batch-settlement.mjs)", cases: [] };
for (const c of cases) vectors.cases.push(await vector(c));
writeFileSync(out, JSON.stringify(vectors, null, 2) + "\n");
console.log(`wrote ${vectors.cases.length} cases to ${out}`);
