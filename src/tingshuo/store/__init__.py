"""What is kept of each call: the transcript store (``[store]`` settings, README "What is kept").

``open_store`` picks the backend from the settings — SQLite at ``store.path`` by default, PostgreSQL when
``store.url`` names one — behind one writer (:class:`TranscriptStore`) that holds writes while the database
cannot take them, expires calls after ``store.retention_days``, and erases what a user deletes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tingshuo.store.base import Backend, Selection
from tingshuo.store.writer import TranscriptStore

if TYPE_CHECKING:
    from tingshuo.config import Settings

__all__ = ["Backend", "Selection", "TranscriptStore", "backend_for", "open_store"]


def backend_for(settings: "Settings", *, readonly: bool = False) -> Backend:
    """The configured database (not yet connected)."""
    if settings.store.url:
        if not settings.store.url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"store.url {settings.store.url!r}: only postgresql:// URLs are supported")
        from tingshuo.store.postgres import PostgresBackend

        return PostgresBackend(settings.store.url)
    from tingshuo.store.sqlite import SQLiteBackend

    return SQLiteBackend(settings.store_path(), readonly=readonly)


def open_store(settings: "Settings", *, retention: bool = True, on_failure: Callable[[str], None] | None = None,
               on_recovery: Callable[[], None] | None = None) -> TranscriptStore | None:
    """The store the settings describe, or None with ``store.enabled = false`` (nothing is written then).
    ``retention``: apply ``retention_days`` now and daily (a server); the CLI's reads and deletions do not."""
    cfg = settings.store
    if not cfg.enabled:
        return None
    return TranscriptStore(backend_for(settings), audio_dir=settings.audio_dir(),
                           retention_days=cfg.retention_days if retention else None,
                           risk_retention_days=cfg.risk_retention_days if retention else None,
                           risk_log=cfg.risk_log, on_failure=on_failure, on_recovery=on_recovery)
