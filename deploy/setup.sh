#!/usr/bin/env bash
# Installs what building and testing x402-gateway needs, idempotently:
#  - cmake (Pingora builds zlib-ng with it), from Debian's packages when missing;
#  - with --with-redis (the test suite passes it): redis-server, the replicas' shared store the
#    tests run against, from Debian's packages when missing;
#  - the pinned npm packages (anvil, solc, viem, the official x402 clients) from package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

install_debian_package() {
  local command="$1" package="$2"
  command -v "$command" >/dev/null 2>&1 && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing $package"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  else
    echo "setup: $command is required (e.g. sudo apt-get install $package)" >&2
    exit 1
  fi
}
install_debian_package cmake cmake
if [ "${1:-}" = --with-redis ]; then
  install_debian_package redis-server redis-server
fi

if ! command -v node >/dev/null 2>&1; then
  echo "setup: Node.js 20 or later is required" >&2
  exit 1
fi

# Reinstall only when the lock file changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.x402-lock-stamp; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.x402-lock-stamp
fi
