#!/usr/bin/env bash
# ./run.sh [COMMAND ARGS…]   install everything if needed, then run `tingshuo COMMAND` (default: chat)
# ./run.sh test [PYTEST ARGS…] install everything if needed, then run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
if [ "${1:-}" = "test" ]; then
  shift
  exec .venv/bin/python -m pytest "$@"
fi
if [ $# -eq 0 ]; then set -- chat --speak; fi
exec .venv/bin/tingshuo "$@"
