"""``tingshuo`` command line: one-turn replies, synthesis, transcription, a chat REPL, the server and the model list.

Every user-facing failure (bad audio, missing model packages, a dead LLM endpoint) prints one clear line on
stderr and exits non-zero; tracebacks are for bugs only. Commands live by concern in ``turns``, ``voice`` and
``ops``; importing them registers them on the one app.
"""

from tingshuo.cli import turns, voice, ops  # noqa: F401, I001  (registers the commands, in help order)
from tingshuo.cli.common import app, main

__all__ = ["app", "main"]
