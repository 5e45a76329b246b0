"""Imported by every Python process a fast test starts (``tests/_guard`` is on its ``PYTHONPATH``): the same
model guard as in the test process (``guard.py``)."""

import os

if os.environ.get("TINGSHUO_FORBID_MODELS"):
    import guard

    guard.install()
