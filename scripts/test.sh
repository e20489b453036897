#!/usr/bin/env bash
# The whole test suite, as CI runs it: setup, lint, format, types, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PWD/node_modules/.bin:$PATH"
echo "== ruff" >&2
ruff check src tests benchmarks
ruff format --check src tests benchmarks
echo "== mypy" >&2
mypy
# What CI cannot run (no Docker engine) it lints: the test image and every shell shim;
# and the hub code the z2jh values embed.
echo "== hadolint, shellcheck" >&2
hadolint Dockerfile.test tests/images/*/Containerfile tests/images/nbinit.Containerfile
shellcheck entrypoints/* scripts/*.sh tests/images/ngc/nvidia_entrypoint.sh tests/images/ngc/entrypoint.d/*.sh
ruff check configs
echo "== pytest" >&2
exec pytest -q -ra "$@"
