// On-chain gas per paid request: `batch-settlement` channels at 10, 100 and 1,000 requests per
// channel, side by side with `exact` payments settled in Multicall3 batches, in one run
// against one dev chain and one gateway binary.
//
// Per channel size N, `--channels` payers each open a channel (one deposit of exactly N × price,
// so no top-up), pay N requests with the official @x402/evm batch-settlement client, then the
// gateway claims them once (admin POST /channels/claim: claim + settle in one transaction per
// payTo), as a claim interval longer than the channel's life would. Gas = the deposits' receipts
// + the gateway's claim transactions (x402_channel_claim_gas_used_total); payTo's balance must
// rise by exactly channels × N × price before it is counted. For `exact`, `--exact` payments
// from several payers at once; gas = x402_settlement_gas_used_total over the payments settled.
//
//   node benches/load/channel-gas.mjs                   N = 10, 100, 1000; 4 channels; 400 exact
//   node benches/load/channel-gas.mjs --quick           N = 10; 2 channels; 40 exact (CI smoke)
// Writes benches/results/channel-gas-<date>.md unless --quick. Exits non-zero when payTo's
// balance does not match what was served.
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { createPublicClient, http } from "viem";
import { decodePaymentResponseHeader } from "@x402/fetch";
import { devPrivateKey } from "../../deploy/devnet/devnet.mjs";
import { payingFetch } from "../../deploy/devnet/pay.mjs";
import { startChainAndUpstream, startTestGateway, freshAddress, balanceOf, eventually } from "../../tests/e2e/harness.mjs";
import { machineDescription, resultStem } from "./processes.mjs";

const PRICE = 1000n; // $0.001 in USDC atomic units
const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "10,100,1000" },
    channels: { type: "string", default: "4" },
    exact: { type: "string", default: "400" },
    quick: { type: "boolean", default: false },
  },
});
const sizes = (values.quick ? "10" : values.sizes).split(",").map(Number);
const channels = values.quick ? 2 : Number(values.channels);
const exactPayments = values.quick ? 40 : Number(values.exact);
// Anvil's accounts 2..9 pay; 0 settles, 1 is the default payTo.
const payerKeys = Array.from({ length: 8 }, (_, i) => devPrivateKey(i + 2));
if (channels < 1 || channels > payerKeys.length) throw new Error(`--channels: 1 to ${payerKeys.length}`);

const payTos = Object.fromEntries(sizes.map((n) => [n, freshAddress()]));
const routes = sizes.map((n) => `
  - name: channel-${n}
    methods: [GET]
    path: /echo/n${n}
    upstream: sample
    price: "$0.001"
    pay_to: "${payTos[n]}"
    scheme: batch-settlement
    channel: { withdraw_delay_seconds: 900, min_deposit: "$${(Number(PRICE) * n) / 1e6}" }
`).join("");

const env = await startChainAndUpstream();
const gateway = await startTestGateway(env, {
  payTo: freshAddress(),
  extraRoutes: routes,
  admin: true,
  settlement: { max_wait_ms: 2000, channels: { claim_interval_seconds: 86_400, refresh_interval_seconds: 300 } },
  extraYaml: "exposure:\n  max_unsettled_per_payer: null\n  max_unsettled_total: null\n",
});
const publicClient = createPublicClient({ transport: http(env.devnet.url) });

async function metric(name, labels = "") {
  const text = await (await gateway.admin("/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ""} `) || (labels === "" && l.startsWith(`${name}{`)));
  return line ? BigInt(line.split(" ").pop()) : 0n;
}

/** One payer's channel: N requests; returns the gas of its deposit transactions. */
async function payChannel(key, n, rpcUrl) {
  const pay = payingFetch(key, { rpcUrl });
  let depositGas = 0n;
  for (let i = 0; i < n; i += 1) {
    const res = await pay(`${gateway.base}/echo/n${n}`);
    if (res.status !== 200) throw new Error(`request ${i} on /echo/n${n}: ${res.status} ${await res.text()}`);
    await res.arrayBuffer();
    const receipt = decodePaymentResponseHeader(res.headers.get("payment-response"));
    if (receipt.transaction) {
      depositGas += (await publicClient.getTransactionReceipt({ hash: receipt.transaction })).gasUsed;
    }
  }
  return depositGas;
}

async function measureChannels(n) {
  const claimsMined = () => metric("x402_channel_claims_total", 'network="eip155:84532",outcome="mined"');
  const claimGasBefore = await metric("x402_channel_claim_gas_used_total", 'network="eip155:84532"');
  const claimsBefore = await claimsMined();
  const deposits = await Promise.all(payerKeys.slice(0, channels).map((key) => payChannel(key, n, env.devnet.url)));
  const requests = BigInt(channels * n);
  const claim = await gateway.admin("/channels/claim", { method: "POST" });
  if (claim.status !== 202) throw new Error(`POST /channels/claim: ${claim.status} ${await claim.text()}`);
  await eventually(async () => (await balanceOf(env.devnet.url, payTos[n])) === requests * PRICE, 120_000, `payTo of N=${n} paid for every request`);
  // payTo is paid when the claim is mined; its gas is counted once the gateway has read it back.
  await eventually(async () => (await claimsMined()) > claimsBefore, 30_000, `the claim of N=${n} counted`);
  const claimGas = (await metric("x402_channel_claim_gas_used_total", 'network="eip155:84532"')) - claimGasBefore;
  const depositGas = deposits.reduce((a, b) => a + b, 0n);
  return { label: `batch-settlement, ${n} requests/channel`, requests, depositGas, claimGas, total: depositGas + claimGas };
}

async function measureExact() {
  const settled = () => metric("x402_settlement_payments_total", 'network="eip155:84532",state="settled"');
  const gasBefore = await metric("x402_settlement_gas_used_total", 'network="eip155:84532"');
  const settledBefore = await settled();
  const payers = payerKeys.map((key) => payingFetch(key));
  const perPayer = Math.ceil(exactPayments / payers.length);
  await Promise.all(payers.map(async (pay, p) => {
    for (let i = 0; i < perPayer && p * perPayer + i < exactPayments; i += 1) {
      const res = await pay(`${gateway.base}/weather`);
      if (res.status !== 200) throw new Error(`exact payment: ${res.status} ${await res.text()}`);
      await res.arrayBuffer();
    }
  }));
  await eventually(async () => (await settled()) - settledBefore === BigInt(exactPayments), 120_000, "every exact payment settled");
  const gas = (await metric("x402_settlement_gas_used_total", 'network="eip155:84532"')) - gasBefore;
  return { label: "exact, Multicall3 batches", requests: BigInt(exactPayments), depositGas: 0n, claimGas: gas, total: gas };
}

let rows;
try {
  rows = [];
  for (const n of sizes) rows.push(await measureChannels(n));
  rows.push(await measureExact());
} finally {
  await gateway.stop();
  await env.stop();
}

const perRequest = (row) => Number(row.total) / Number(row.requests);
const exact = perRequest(rows.at(-1));
const table = [
  "| payment | paid requests | deposit gas | claim / settlement gas | gas per request | vs exact |",
  "|---|---:|---:|---:|---:|---:|",
  ...rows.map((row) => `| ${row.label} | ${row.requests} | ${row.depositGas} | ${row.claimGas} | ${perRequest(row).toFixed(0)} | ${(perRequest(row) / exact).toFixed(3)} |`),
].join("\n");
console.log(table);
if (!values.quick) {
  const stem = resultStem(`channel-gas-${new Date().toISOString().slice(0, 10)}`);
  const body = `# On-chain gas per paid request\n\n${machineDescription()}; ${channels} channels per size, each claimed once after its last request (one claim + settle transaction per payTo).\n\n${table}\n`;
  writeFileSync(`${stem}.md`, body);
  console.log(`wrote ${stem}.md`);
}
