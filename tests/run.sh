#!/usr/bin/env bash
# The whole test suite, from a fresh clone:
#   1. setup (cmake, pinned npm packages: anvil, solc, viem, official x402 clients)
#   2. the committed dev-chain bytecode matches its Solidity sources
#   3. unit tests (cargo test; the Redis ledger's against a Redis on 127.0.0.1:6379)
#   4. end-to-end tests: real anvil + sample upstream + the x402-gateway binary + official clients
#   4b. deploy/ checked with hadolint, kubernetes-validate and systemd-analyze
#   5. a short, bounded fuzz run of header decoding and verification (when cargo-fuzz is available)
#   6. the criterion benches, the load harness and the settlement soak in quick mode, so they cannot rot
# Environment: X402_FUZZ_SECONDS (default 30; 0 skips), X402_SKIP_BENCH=1.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/setup.sh --with-redis

echo "== dev-chain contracts"
node deploy/devnet/build-contracts.mjs --check

# The Redis ledger's tests and the replica tests share a Redis on 127.0.0.1:6379 (each under a
# fresh key prefix); start one when none answers there.
if ! redis-cli -p 6379 ping >/dev/null 2>&1; then
  redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
fi

echo "== unit tests"
cargo test --workspace --locked

echo "== end-to-end tests"
cargo build --locked --bin x402-gateway
node --test --test-concurrency=1 tests/e2e/

echo "== deploy/: Dockerfile, Kubernetes manifests, systemd unit"
bash tests/deploy-lint.sh

fuzz_seconds="${X402_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" != 0 ]; then
  echo "== fuzz: decode_verify for ${fuzz_seconds}s"
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --quiet
  fi
  toolchain=()
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
  else
    # cargo-fuzz needs nightly flags; stable accepts them under RUSTC_BOOTSTRAP.
    export RUSTC_BOOTSTRAP=1
  fi
  corpus="$(mktemp -d)"
  (cd fuzz && cargo "${toolchain[@]}" fuzz run decode_verify "$corpus" seeds/decode_verify -- \
    -max_total_time="$fuzz_seconds" -max_len=8192)
  rm -rf "$corpus"
fi

if [ "${X402_SKIP_BENCH:-0}" != 1 ]; then
  echo "== benches (quick mode)"
  cargo bench --locked -p x402-gateway-benches --bench verify_path -- --warm-up-time 0.2 --measurement-time 0.5
  cargo bench --locked -p x402-gateway-benches --bench journal_latency -- --quick
  cargo bench --locked -p x402-gateway-benches --bench replay_memory -- --quick
  echo "== load harness (quick mode)"
  node benches/load/run.mjs --quick
  echo "== settlement soak (quick mode)"
  node benches/load/soak.mjs --quick
  echo "== channel gas (quick mode)"
  node benches/load/channel-gas.mjs --quick
fi

echo "== all tests passed"
