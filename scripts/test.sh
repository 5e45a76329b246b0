#!/usr/bin/env bash
# The whole test suite as ./run.sh test (and so CI) runs it: the fast tier, then the slow tier, in one random order.
#
#   fast  pytest -m "not slow"   logic on real inputs, no ASR/LLM/TTS model (tests/model_guard.py enforces it)
#   slow  pytest -m slow         everything that needs the real models
#
# Both tiers use one seed of pytest-randomly, printed first: TINGSHUO_TEST_SEED=N reruns that order. Each tier
# prints its slowest tests; the last lines give each tier's time and the totals (test-artifacts/junit/ has each
# test's time).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SEED="${TINGSHUO_TEST_SEED:-$(( (RANDOM << 15 | RANDOM) ))}"
REPORTS=test-artifacts/junit  # per-tier JUnit XML (every test's time), kept for a look after the run
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
echo "[test] random order seed: $SEED   (rerun this order: TINGSHUO_TEST_SEED=$SEED ./run.sh test)"

tier() {  # tier NAME MARK [PYTEST ARGS…]
  local name=$1 mark=$2
  shift 2
  local t0=$SECONDS
  echo "[test] tier $name: pytest -m \"$mark\" $*"
  "$PY" -m pytest -m "$mark" --randomly-seed="$SEED" --junitxml="$REPORTS/$name.xml" "$@"
  local rc=$?
  echo "$name $rc $((SECONDS - t0))" >> "$REPORTS/tiers"
  return $rc
}

tier fast "not slow"
fast_rc=$?
tier slow slow
slow_rc=$?

"$PY" - "$REPORTS" <<'PY'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

d = Path(sys.argv[1])
total = {"passed": 0, "failed": 0, "skipped": 0}
print("\n[test] tiers")
for line in (d / "tiers").read_text().splitlines():
    name, rc, secs = line.split()
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    xml = d / f"{name}.xml"
    if xml.exists():
        for suite in ET.parse(xml).getroot().iter("testsuite"):
            n, f, e, s = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
            counts["failed"] += f + e
            counts["skipped"] += s
            counts["passed"] += n - f - e - s
    for k in total:
        total[k] += counts[k]
    print(f"  {name:5s} {int(secs) // 60:3d} min {int(secs) % 60:02d} s   {counts['passed']} passed, "
          f"{counts['failed']} failed, {counts['skipped']} skipped   (exit {rc})")
print(f"total: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
PY
[ $fast_rc -eq 0 ] && [ $slow_rc -eq 0 ]
