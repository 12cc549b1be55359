// Pays for a URL with the official x402 client (@x402/fetch + @x402/evm), as an agent would.
//   node deploy/devnet/pay.mjs [URL] [--count N]     default http://127.0.0.1:8402/weather, once
// It pays whichever scheme the route offers: `exact` (one signed transfer per request) or
// `batch-settlement` (a channel deposit, then one off-chain voucher per request; try
// http://127.0.0.1:8402/echo/hello --count 20). The payer is anvil account 2 unless
// X402_PAYER_KEY is set.
import { x402Client, wrapFetchWithPayment, decodePaymentResponseHeader } from "@x402/fetch";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { toClientEvmSigner } from "@x402/evm";
import { BatchSettlementEvmScheme } from "@x402/evm/batch-settlement/client";
import { createPublicClient, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { devPrivateKey } from "./devnet.mjs";

/**
 * A fetch that pays `exact` offers; with `rpcUrl`, batch-settlement ones too (the channel
 * client reads its channel's state from that chain).
 */
export function payingFetch(privateKey, { rpcUrl } = {}) {
  const account = privateKeyToAccount(privateKey);
  const client = new x402Client();
  registerExactEvmScheme(client, { signer: account });
  if (rpcUrl) {
    const publicClient = createPublicClient({ transport: http(rpcUrl) });
    client.register("eip155:*", new BatchSettlementEvmScheme(toClientEvmSigner(account, publicClient)));
  }
  return wrapFetchWithPayment(fetch, client);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { count: { type: "string", default: "1" }, rpc: { type: "string", default: "http://127.0.0.1:8545" } },
  });
  const url = positionals[0] ?? "http://127.0.0.1:8402/weather";
  const count = Number(values.count);
  if (!Number.isInteger(count) || count < 1) {
    console.error(`--count ${values.count}: give a whole number of requests, 1 or more`);
    process.exit(2);
  }
  const pay = payingFetch(process.env.X402_PAYER_KEY ?? devPrivateKey(2), { rpcUrl: values.rpc });
  let response;
  for (let i = 0; i < count; i += 1) {
    response = await pay(url);
    const body = await response.text();
    if (count === 1 || !response.ok) console.log(`HTTP ${response.status}\n${body}`);
    if (!response.ok) break;
  }
  if (count > 1 && response.ok) console.log(`HTTP ${response.status} x ${count}`);
  const receipt = response.headers.get("PAYMENT-RESPONSE");
  if (receipt) console.log("PAYMENT-RESPONSE:", JSON.stringify(decodePaymentResponseHeader(receipt)));
  process.exit(response.ok ? 0 : 1);
}
