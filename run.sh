#!/usr/bin/env bash
# ./run.sh [COMMAND ARGS…]   install everything if needed, then run `tingshuo COMMAND` (default: serve, the call page)
# ./run.sh test               install everything if needed, then run the whole test suite (scripts/test.sh: the
#                              fast tier, then the slow tier, in one printed random order)
# ./run.sh test PYTEST ARGS…   the same set-up, then pytest with those arguments (e.g. -m "not slow", a file)
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = "test" ]; then export TINGSHUO_TEST_DEPS=1; fi
bash scripts/setup.sh
if [ "${1:-}" = "test" ]; then
  shift
  if [ $# -eq 0 ]; then exec bash scripts/test.sh; fi
  exec .venv/bin/python -m pytest "$@"
fi
if [ $# -eq 0 ]; then set -- serve; fi
exec .venv/bin/tingshuo "$@"
