// A settlement transaction the node keeps losing is never given up on, and no second
// transaction at another nonce is signed for its payments while it may still land: through
// the real binary on the dev chain, every settlement transaction is taken out of the node's
// pool as soon as it is there (as a node under pressure drops them) while blocks are mined.
// The settler sends the same journaled bytes again, or replaces them at the same nonce; once
// the node keeps them, that nonce lands and pays payTo once. (Payments the settler does give
// up on after `max_attempts` mined transactions are still looked at again until their
// validBefore, and corrected to settled if one of those transactions paid after all.)
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

test("a settlement transaction the node keeps dropping is sent again at its own nonce, never given up, and lands once", async () => {
  const journalPath = join(mkdtempSync(join(tmpdir(), "x402-given-up-")), "journal.db");
  const payTo = freshAddress();
  const settler = devAccount(0).address;
  const gateway = await startTestGateway(env, {
    payTo,
    settlement: { journal_path: journalPath, max_wait_ms: 100, receipt_timeout_seconds: 1, stall_after_seconds: 600 },
  });
  try {
    const accepts = unb64((await fetch(gateway.base + "/weather")).headers.get("payment-required")).accepts[0];
    const startNonce = Number(await rpc(env.devnet.url, "eth_getTransactionCount", [settler, "latest"]));
    await rpc(env.devnet.url, "evm_setAutomine", [false]);
    await rpc(env.devnet.url, "evm_setIntervalMining", [1]);
    let dropping = true;
    const droppedNonces = [];
    const dropper = (async () => {
      while (dropping) {
        const pool = await rpc(env.devnet.url, "txpool_content");
        const mine = Object.entries(pool.pending ?? {}).find(([from]) => from.toLowerCase() === settler.toLowerCase());
        for (const tx of Object.values(mine?.[1] ?? {})) {
          await rpc(env.devnet.url, "anvil_dropTransaction", [tx.hash]);
          droppedNonces.push(Number(tx.nonce));
        }
        await sleep(10);
      }
    })();
    const res = await fetch(gateway.base + "/weather", { headers: { "PAYMENT-SIGNATURE": b64(await signPayment(devPrivateKey(5), accepts)) } });
    assert.equal(res.status, 200);
    await eventually(() => droppedNonces.length >= 4, 60_000, "the settler sending its transaction again, block after block");
    dropping = false;
    await dropper;
    assert.deepEqual([...new Set(droppedNonces)], [startNonce], "every transaction it sent was at the one nonce");
    assert.equal(journaled(journalPath, "failed").length, 0, "not given up on");
    assert.equal(await balanceOf(env.devnet.url, payTo), 0n, "nothing landed yet");

    await eventually(async () => (await balanceOf(env.devnet.url, payTo)) === 1000n, 30_000, "the transaction lands once the node keeps it");
    const settled = await eventually(() => {
      const rows = journaled(journalPath, "settled");
      return rows.length === 1 && rows;
    }, 30_000, "the journal follows the chain");
    assert.match(settled[0].transaction, /^0x[0-9a-f]{64}$/);
    assert.equal(journaled(journalPath, "failed").length, 0);
    assert.equal(Number(await rpc(env.devnet.url, "eth_getTransactionCount", [settler, "latest"])), startNonce + 1, "one nonce used, once");
    assert.match(gateway.logs(), /re-sent a journaled settlement transaction/);
  } finally {
    if (process.env.X402_TEST_SHOW_LOGS) console.error(gateway.logs());
    await rpc(env.devnet.url, "evm_setIntervalMining", [0]);
    await rpc(env.devnet.url, "evm_setAutomine", [true]);
    await gateway.stop();
  }
});
