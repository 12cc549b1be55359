// Pays for a URL with the official x402 client (@x402/fetch + @x402/evm), as an agent would.
//   node deploy/devnet/pay.mjs [URL]        default http://127.0.0.1:8402/weather
// The payer is anvil account 2 unless X402_PAYER_KEY is set.
import { x402Client, wrapFetchWithPayment, decodePaymentResponseHeader } from "@x402/fetch";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";
import { fileURLToPath } from "node:url";
import { devPrivateKey } from "./devnet.mjs";

export function payingFetch(privateKey) {
  const client = new x402Client();
  registerExactEvmScheme(client, { signer: privateKeyToAccount(privateKey) });
  return wrapFetchWithPayment(fetch, client);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const url = process.argv[2] ?? "http://127.0.0.1:8402/weather";
  const pay = payingFetch(process.env.X402_PAYER_KEY ?? devPrivateKey(2));
  const response = await pay(url);
  console.log(`HTTP ${response.status}`);
  console.log(await response.text());
  const receipt = response.headers.get("PAYMENT-RESPONSE");
  if (receipt) console.log("PAYMENT-RESPONSE:", JSON.stringify(decodePaymentResponseHeader(receipt)));
  process.exit(response.ok ? 0 : 1);
}
