// "Gave up" never hides money that arrives. Through the real binary on the dev chain with
// mining paused: each settlement transaction of a payment vanishes from the node's pool (as a
// node under pressure drops them), so the settler signs another, until it gives up and journals
// the payment failed. Then the first of those transactions turns up after all (someone kept
// it and broadcasts it), lands and pays payTo, and the journal is corrected to settled.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { devAccount, devPrivateKey, rpc } from "../../deploy/devnet/devnet.mjs";
import { startChainAndUpstream, startTestGateway, freshAddress, balanceOf, eventually, runCli, sleep, b64, unb64 } from "./harness.mjs";
import { signPayment } from "./payments.mjs";

let env;

before(async () => {
  env = await startChainAndUpstream();
});

after(async () => {
  await env?.stop();
});

const journaled = (journalPath, state) =>
  runCli(["payments", "--journal", journalPath, "list", "--state", state, "--limit", "0"]).stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));

test("a payment given up on while its transaction sat in the pool is corrected to settled when it lands", async () => {
  const journalPath = join(mkdtempSync(join(tmpdir(), "x402-given-up-")), "journal.db");
  const payTo = freshAddress();
  const gateway = await startTestGateway(env, {
    payTo,
    settlement: { journal_path: journalPath, max_wait_ms: 100, receipt_timeout_seconds: 1, stall_after_seconds: 600 },
  });
  try {
    const accepts = unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
    await rpc(env.devnet.url, "evm_setAutomine", [false]);
    // Every settlement transaction is taken out of the pool as soon as it is there; the first
    // one's bytes are kept.
    let firstRaw = null;
    let dropping = true;
    const dropped = new Set();
    const dropper = (async () => {
      while (dropping) {
        const pool = await rpc(env.devnet.url, "txpool_content");
        const mine = Object.entries(pool.pending ?? {}).find(([from]) => from.toLowerCase() === devAccount(0).address.toLowerCase());
        for (const tx of Object.values(mine?.[1] ?? {})) {
          firstRaw ??= await rpc(env.devnet.url, "eth_getRawTransactionByHash", [tx.hash]);
          await rpc(env.devnet.url, "anvil_dropTransaction", [tx.hash]);
          dropped.add(tx.hash);
        }
        await sleep(20);
      }
    })();
    const res = await fetch(gateway.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(await signPayment(devPrivateKey(5), accepts)) } });
    assert.equal(res.status, 200);
    const failed = await eventually(() => {
      const rows = journaled(journalPath, "failed");
      return rows.length === 1 && rows;
    }, 90_000, "the settler gives up");
    dropping = false;
    await dropper;
    assert.match(failed[0].reason, /gave up after \d+ settlement transactions/);
    assert.equal(await balanceOf(env.devnet.url, payTo), 0n, "nothing landed yet");

    await rpc(env.devnet.url, "eth_sendRawTransaction", [firstRaw]);
    await rpc(env.devnet.url, "evm_setAutomine", [true]);
    await rpc(env.devnet.url, "evm_mine", []);
    await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === 1000n, 20_000, "a pooled transaction lands and pays");
    const settled = await eventually(() => {
      const rows = journaled(journalPath, "settled");
      return rows.length === 1 && rows;
    }, 30_000, "the journal follows the chain");
    assert.match(settled[0].transaction, /^0x[0-9a-f]{64}$/);
    assert.equal(journaled(journalPath, "failed").length, 0);
    assert.match(gateway.logs(), /paid after all; journal corrected to settled/);
  } finally {
    if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway.logs());
    await rpc(env.devnet.url, "evm_setAutomine", [true]);
    await gateway.stop();
  }
});
