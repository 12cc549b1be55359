// Hand-built payments for negative tests: the same EIP-712 signing the official client does,
// with one field changed at a time.
import { randomBytes } from "node:crypto";
import { encodeFunctionData, parseSignature } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { rpc, USDC_ADDRESS, TEST_USDC_ABI } from "../../deploy/devnet/devnet.mjs";

export const TRANSFER_WITH_AUTHORIZATION = [
  { name: "from", type: "address" },
  { name: "to", type: "address" },
  { name: "value", type: "uint256" },
  { name: "validAfter", type: "uint256" },
  { name: "validBefore", type: "uint256" },
  { name: "nonce", type: "bytes32" },
];

/**
 * Signs a v2 payment for `requirements` (an accepts[] entry). `tamper` may override the
 * authorization fields, the domain, or the `accepted` object.
 */
export async function signPayment(privateKey, requirements, tamper = {}) {
  const account = privateKeyToAccount(privateKey);
  const now = Math.floor(Date.now() / 1000);
  const authorization = {
    from: account.address,
    to: requirements.payTo,
    value: requirements.amount,
    validAfter: String(now - 600),
    validBefore: String(now + requirements.maxTimeoutSeconds),
    nonce: "0x" + randomBytes(32).toString("hex"),
    ...tamper.authorization,
  };
  const domain = {
    name: requirements.extra.name,
    version: requirements.extra.version,
    chainId: Number(requirements.network.split(":")[1]),
    verifyingContract: requirements.asset,
    ...tamper.domain,
  };
  const signature = await account.signTypedData({
    domain,
    types: { TransferWithAuthorization: TRANSFER_WITH_AUTHORIZATION },
    primaryType: "TransferWithAuthorization",
    message: {
      ...authorization,
      value: BigInt(authorization.value),
      validAfter: BigInt(authorization.validAfter),
      validBefore: BigInt(authorization.validBefore),
    },
  });
  return {
    x402Version: 2,
    resource: { url: "http://test/weather", description: "", mimeType: "" },
    accepted: { ...requirements, ...tamper.accepted },
    payload: { signature: tamper.signature ?? signature, authorization },
  };
}

/**
 * The burnt-nonce attack: `account` (an unlocked dev account, with gas money) signs a second
 * authorization with `nonce`, to itself for 0, and submits it on the chain at `rpcUrl`.
 * Returns the transaction hash.
 */
export async function burnNonce(rpcUrl, account, nonce) {
  const validBefore = BigInt(Math.floor(Date.now() / 1000) + 3600);
  const signature = await account.signTypedData({
    domain: { name: "USDC", version: "2", chainId: 84532, verifyingContract: USDC_ADDRESS },
    types: { TransferWithAuthorization: TRANSFER_WITH_AUTHORIZATION },
    primaryType: "TransferWithAuthorization",
    message: { from: account.address, to: account.address, value: 0n, validAfter: 0n, validBefore, nonce },
  });
  const data = encodeFunctionData({
    abi: TEST_USDC_ABI,
    functionName: "transferWithAuthorization",
    args: [account.address, account.address, 0n, 0n, validBefore, nonce, signature],
  });
  return rpc(rpcUrl, "eth_sendTransaction", [{ from: account.address, to: USDC_ADDRESS, data }]);
}

/**
 * `account` (an unlocked dev account) cancels its authorization `nonce` on-chain with
 * EIP-3009 `cancelAuthorization`. Returns the transaction hash.
 */
export async function cancelAuthorization(rpcUrl, account, nonce) {
  const signature = await account.signTypedData({
    domain: { name: "USDC", version: "2", chainId: 84532, verifyingContract: USDC_ADDRESS },
    types: { CancelAuthorization: [{ name: "authorizer", type: "address" }, { name: "nonce", type: "bytes32" }] },
    primaryType: "CancelAuthorization",
    message: { authorizer: account.address, nonce },
  });
  const { r, s, v } = parseSignature(signature);
  const data = encodeFunctionData({ abi: TEST_USDC_ABI, functionName: "cancelAuthorization", args: [account.address, nonce, Number(v), r, s] });
  return rpc(rpcUrl, "eth_sendTransaction", [{ from: account.address, to: USDC_ADDRESS, data }]);
}
