// The official x402 flow as a load-harness contender: an Express app with `@x402/express`'s
// paymentMiddleware in front of a handler that fetches the same upstream the gateway proxies,
// and the official facilitator code (`x402Facilitator` + `@x402/evm`'s ExactEvmScheme) served
// over HTTP on loopback, settling on the given chain with viem, as the x402 examples set it up.
// Both servers share this one process, so the harness counts their CPU and memory together.
//
//   node benches/load/official.mjs --port P --facilitator-port F --upstream http://127.0.0.1:U
//                                  --rpc http://127.0.0.1:8545 --pay-to 0x… (key in X402_SETTLEMENT_KEY)
import express from "express";
import { paymentMiddleware, x402ResourceServer } from "@x402/express";
import { HTTPFacilitatorClient } from "@x402/core/server";
import { x402Facilitator } from "@x402/core/facilitator";
import { ExactEvmScheme as ExactEvmServer } from "@x402/evm/exact/server";
import { ExactEvmScheme as ExactEvmFacilitator } from "@x402/evm/exact/facilitator";
import { toFacilitatorEvmSigner } from "@x402/evm";
import { createWalletClient, http, publicActions } from "viem";
import { privateKeyToAccount, nonceManager } from "viem/accounts";
import { baseSepolia } from "viem/chains";
import { parseArgs } from "node:util";

const NETWORK = "eip155:84532";

const { values: args } = parseArgs({
  options: {
    port: { type: "string" },
    "facilitator-port": { type: "string" },
    upstream: { type: "string" },
    rpc: { type: "string" },
    "pay-to": { type: "string" },
  },
});

/** The facilitator: verify, settle and supported, as the x402 facilitator examples serve them. */
function facilitatorApp(key, rpcUrl) {
  // The nonce manager lets concurrent settlements from one account take distinct nonces.
  const account = privateKeyToAccount(key, { nonceManager });
  // Receipts polled every 100 ms, not viem's 1 s for Base: the official flow's best case.
  const client = createWalletClient({ account, chain: baseSepolia, transport: http(rpcUrl), pollingInterval: 100 }).extend(publicActions);
  const signer = toFacilitatorEvmSigner({ ...client, address: account.address });
  const facilitator = new x402Facilitator().register(NETWORK, new ExactEvmFacilitator(signer));
  const app = express();
  app.use(express.json());
  app.post("/verify", async (req, res) => {
    try {
      res.json(await facilitator.verify(req.body.paymentPayload, req.body.paymentRequirements));
    } catch (error) {
      res.status(500).json({ error: String(error?.message ?? error) });
    }
  });
  app.post("/settle", async (req, res) => {
    try {
      res.json(await facilitator.settle(req.body.paymentPayload, req.body.paymentRequirements));
    } catch (error) {
      res.status(500).json({ error: String(error?.message ?? error) });
    }
  });
  app.get("/supported", (_req, res) => res.json(facilitator.getSupported()));
  return app;
}

/** The resource server: the official middleware in front of a handler that calls the upstream. */
function resourceApp(facilitatorUrl, upstream, payTo) {
  const server = new x402ResourceServer(new HTTPFacilitatorClient({ url: facilitatorUrl })).register(NETWORK, new ExactEvmServer());
  const routes = { "GET /weather": { accepts: { scheme: "exact", price: "$0.001", network: NETWORK, payTo }, description: "weather" } };
  const app = express();
  app.get("/health", (_req, res) => res.json({ status: "ok" }));
  app.use(paymentMiddleware(routes, server));
  app.get("/weather", async (_req, res) => {
    const answer = await fetch(`${upstream}/weather`);
    res.status(answer.status).type(answer.headers.get("content-type") ?? "application/json").send(Buffer.from(await answer.arrayBuffer()));
  });
  return app;
}

const key = process.env.X402_SETTLEMENT_KEY;
if (!key || !args.port || !args["facilitator-port"] || !args.upstream || !args.rpc || !args["pay-to"]) {
  console.error("usage: official.mjs --port P --facilitator-port F --upstream URL --rpc URL --pay-to 0x… (X402_SETTLEMENT_KEY set)");
  process.exit(2);
}
const facilitatorUrl = `http://127.0.0.1:${args["facilitator-port"]}`;
const facilitatorServer = facilitatorApp(key, args.rpc).listen(Number(args["facilitator-port"]), "127.0.0.1");
await new Promise((resolve) => facilitatorServer.once("listening", resolve));
const resourceServer = resourceApp(facilitatorUrl, args.upstream, args["pay-to"]).listen(Number(args.port), "127.0.0.1");
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    resourceServer.close();
    facilitatorServer.close();
    process.exit(0);
  });
}
