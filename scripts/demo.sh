#!/usr/bin/env bash
# A real example: `nbinit start` in a throwaway container (the test sandbox), as PID 1,
# with an admin config served over HTTP on loopback, creating user `alice` beside jovyan.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python tests/helpers/demo.py "$@"
