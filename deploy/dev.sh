#!/usr/bin/env bash
# Sets everything up and runs the gateway locally, offline:
#   dev chain (anvil as Base Sepolia, chain id 84532, test USDC)  127.0.0.1:8545
#   sample upstream API                                            127.0.0.1:8080
#   x402-gateway with gateway.yaml                                 127.0.0.1:8402
# Ctrl-C stops all three (the gateway settles what it accepted first).
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/setup.sh
cargo build --release --bin x402-gateway

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# The dev chain starts empty every time, so the settlement journal does too: payments
# journaled against an earlier dev chain mean nothing on this one.
rm -f x402-journal.db x402-journal.db-wal x402-journal.db-shm

node deploy/devnet/devnet.mjs --port 8545 &
pids+=($!)
node deploy/devnet/sample-upstream.mjs --port 8080 &
pids+=($!)
for _ in $(seq 1 100); do
  if curl -sf -o /dev/null http://127.0.0.1:8080/health && \
     curl -sf -o /dev/null -H 'content-type: application/json' \
       -d '{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}' http://127.0.0.1:8545; then
    break
  fi
  sleep 0.1
done

# Anvil's well-known account 0: a dev-chain key, never a real one.
export X402_SETTLEMENT_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
# The admin API's bearer token: random per run (the gateway refuses one under 32 bytes).
export X402_ADMIN_TOKEN="${X402_ADMIN_TOKEN:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}"

cat <<MSG

x402-gateway is starting on http://127.0.0.1:8402
  free:  curl -i http://127.0.0.1:8402/health
  402:   curl -i http://127.0.0.1:8402/weather
  pay:   node deploy/devnet/pay.mjs http://127.0.0.1:8402/weather
         (the official @x402/fetch client, paying from anvil account 2)
  channel: node deploy/devnet/pay.mjs http://127.0.0.1:8402/echo/hello --count 20
         (batch-settlement: one deposit, then a voucher per request, claimed in batches)
  admin: curl -H 'Authorization: Bearer $X402_ADMIN_TOKEN' http://127.0.0.1:9402/metrics
         (also /config, /routes, /settlement, /exposure, /channels; edit gateway.yaml and it reloads)
Ctrl-C to stop.

MSG
./target/release/x402-gateway run --config gateway.yaml &
pids+=($!)
wait "${pids[-1]}"
