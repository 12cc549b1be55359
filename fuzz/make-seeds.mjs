// Writes the fuzz seed corpus: valid v2 and v1 payment headers for the fuzz target's fixed
// requirement and clock, plus a few near misses. Run: node fuzz/make-seeds.mjs
import { writeFileSync } from "node:fs";
import { privateKeyToAccount } from "viem/accounts";
import { TRANSFER_WITH_AUTHORIZATION } from "../tests/e2e/payments.mjs";

const dir = new URL("./seeds/decode_verify/", import.meta.url);
const now = 1_800_000_000;
const account = privateKeyToAccount("0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a");
const accepted = {
  scheme: "exact", network: "eip155:84532", amount: "1000",
  asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
  payTo: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
  maxTimeoutSeconds: 300, extra: { name: "USDC", version: "2" },
};
const authorization = {
  from: account.address, to: accepted.payTo, value: "1000",
  validAfter: String(now - 600), validBefore: String(now + 300),
  nonce: "0x" + "ab".repeat(32),
};
const signature = await account.signTypedData({
  domain: { name: "USDC", version: "2", chainId: 84532, verifyingContract: accepted.asset },
  types: { TransferWithAuthorization: TRANSFER_WITH_AUTHORIZATION },
  primaryType: "TransferWithAuthorization",
  message: { ...authorization, value: 1000n, validAfter: BigInt(now - 600), validBefore: BigInt(now + 300) },
});
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64");
const v2 = { x402Version: 2, resource: { url: "http://x/weather" }, accepted, payload: { signature, authorization } };
writeFileSync(new URL("v2-valid", dir), b64(v2));
writeFileSync(new URL("v1-valid", dir), "1" + b64({ x402Version: 1, scheme: "exact", network: "base-sepolia", payload: v2.payload }));
writeFileSync(new URL("v2-wrong-value", dir), b64({ ...v2, payload: { signature, authorization: { ...authorization, value: "999" } } }));
writeFileSync(new URL("v2-high-s", dir), b64({ ...v2, payload: { signature: signature.slice(0, 66) + "f".repeat(64) + "1b", authorization } }));
writeFileSync(new URL("v2-empty", dir), b64({}));
console.log("wrote fuzz/seeds/decode_verify");
