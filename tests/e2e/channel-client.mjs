// The official @x402/evm batch-settlement client, as the channel e2e tests use it.
import { createPublicClient, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { x402Client, wrapFetchWithPayment } from "@x402/fetch";
import { toClientEvmSigner } from "@x402/evm";
import { BatchSettlementEvmScheme } from "@x402/evm/batch-settlement/client";

/** A route (`methods: null`: every method) paid with batch-settlement at $0.001, a 900 s withdraw delay and a $0.1 deposit. */
export function channelRoute(name, path, { methods = "[GET]" } = {}) {
  const methodsLine = methods ? `\n    methods: ${methods}` : "";
  return `
  - name: ${name}${methodsLine}
    path: ${path}
    upstream: sample
    price: "$0.001"
    scheme: batch-settlement
    channel: { withdraw_delay_seconds: 900, min_deposit: "$0.1" }
`;
}

/** The official client for `privateKey` against the chain at `rpcUrl`: `pay` is a paying fetch. */
export function channelClient(rpcUrl, privateKey) {
  const account = privateKeyToAccount(privateKey);
  const publicClient = createPublicClient({ transport: http(rpcUrl) });
  const scheme = new BatchSettlementEvmScheme(toClientEvmSigner(account, publicClient));
  const client = new x402Client();
  client.register("eip155:*", scheme);
  return { account, scheme, publicClient, pay: wrapFetchWithPayment(fetch, client) };
}
