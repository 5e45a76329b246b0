"""pytest plugin: a test without ``@pytest.mark.slow`` loads no ASR, LLM or TTS model (see ``_guard/guard.py``).

While a fast test runs, its node id is in ``TINGSHUO_FORBID_MODELS`` and ``tests/_guard`` is on ``PYTHONPATH`` (its
``sitecustomize.py`` guards the subprocesses the test starts). A violation fails the test even when the code under
test caught the error; a fast test asking for a fixture that holds those models fails before it is built.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _guard.guard import ENV, GUARD_DIR, HEAVY_FIXTURES, LOG, install


def pytest_configure(config) -> None:
    install()


def _is_fast(item) -> bool:
    return item.get_closest_marker("slow") is None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    if _is_fast(item):
        heavy = sorted(HEAVY_FIXTURES & set(item.fixturenames))
        if heavy:
            pytest.fail(f"{item.nodeid} is not marked slow but uses the model fixture(s) {', '.join(heavy)}",
                        pytrace=False)
        log = Path(item.config._tmp_path_factory.getbasetemp()) / "model-guard.log"
        log.unlink(missing_ok=True)
        os.environ[ENV], os.environ[LOG] = item.nodeid, str(log)
        paths = os.environ.get("PYTHONPATH", "")
        item._guard_saved_pythonpath = paths
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(GUARD_DIR), paths) if p)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        if _is_fast(item) and os.environ.get(ENV) == item.nodeid:
            log = Path(os.environ.pop(LOG))
            del os.environ[ENV]
            saved = getattr(item, "_guard_saved_pythonpath", "")
            if saved:
                os.environ["PYTHONPATH"] = saved
            else:
                os.environ.pop("PYTHONPATH", None)
            item._guard_violations = log.read_text(encoding="utf-8").splitlines() if log.exists() else []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.when == "teardown" and getattr(item, "_guard_violations", None):
        report.outcome = "failed"
        report.longrepr = "model guard: " + "; ".join(dict.fromkeys(item._guard_violations))
    return report
