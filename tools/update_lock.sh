#!/usr/bin/env bash
# Regenerates requirements_lock.txt (exact versions + sha256 hashes of every
# package) from requirements.in. Bazel re-creates @python_venv on the next
# build because the lock is an input of that repository rule.
#
#   tools/update_lock.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
python3 -m venv "${tmp}/venv"
"${tmp}/venv/bin/pip" install -q --disable-pip-version-check pip-tools
"${tmp}/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
  --no-emit-index-url --no-emit-find-links \
  --output-file requirements_lock.txt requirements.in
echo "requirements_lock.txt updated; the next ./bazelw build re-creates the environment."
