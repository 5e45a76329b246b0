"""Logs carry no user or assistant text unless ``store.log_user_text`` is on (a debugging switch).

Logging is process-wide, so this switch is too: ``configure`` is called when settings are loaded for a server
or a CLI command, and every log line that would carry words passes them through :func:`shown`.
"""

from __future__ import annotations

_SHOW = False


def configure(log_user_text: bool) -> None:
    global _SHOW
    _SHOW = bool(log_user_text)


def shown(text: str) -> str:
    """``text`` itself when logging user text is on, else only its length (what a log reader may see)."""
    return repr(text) if _SHOW else f"<{len(text)} chars hidden; store.log_user_text shows them>"
