"""Kept audio and other private files: owner-only from the moment they exist, removed with their call.

The folders are created ``0700`` and the files ``0600`` whatever the umask: a stored call is what a person said
to a confidant, not something for every account on the machine.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("tingshuo.store")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) owner-only; an existing folder we own is tightened."""
    path = Path(path)
    missing = [d for d in (path, *path.parents) if not d.exists()]
    for d in reversed(missing):  # mkdir(parents=True) would give the parents it makes the umask's mode
        d.mkdir(mode=0o700, exist_ok=True)
    _tighten(path, 0o700)
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists and is owner-only before anything is written to it (SQLite gives its WAL and
    shared-memory files the database file's mode)."""
    path = Path(path)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    _tighten(path, 0o600)
    return path


def _tighten(path: Path, mode: int) -> None:
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o777 != mode:
            os.chmod(path, mode)
    except OSError as e:  # a volume that ignores modes: say so, go on
        log.warning("could not make %s owner-only: %s", path, e)


def _open_private(path: Path, mode: str) -> Any:
    """``path`` opened for writing, created owner-only (not made private after the umask's mode: no window)."""
    private_dir(path.parent)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def write_private(path: Path, text: str) -> None:
    with _open_private(path, "w") as f:
        f.write(text)


def write_wav(root: Path, session_id: str, item_id: str, audio: Any, rate: int) -> str | None:
    """A turn's audio as 16-bit WAV at ``root/<session>/<item>.wav``; its path, or None when it could not be
    written (logged: the turn's row is still written)."""
    import soundfile as sf

    if not _safe(session_id) or not _safe(item_id):
        log.error("not keeping audio under an unsafe name")
        return None
    path = Path(root) / session_id / f"{item_id}.wav"
    try:
        with _open_private(path, "wb") as f:
            sf.write(f, audio, rate, subtype="PCM_16", format="WAV")
    except (OSError, RuntimeError) as e:
        log.error("could not keep the audio of %s: %s", item_id, e)
        return None
    return str(path)


def _safe(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..") and "\0" not in name


def remove(paths: Iterable[str | None], root: Path | None) -> int:
    """Delete audio files a deleted row pointed at (only inside ``root``: a row is not trusted to name any
    file on the machine). Returns how many were removed."""
    n = 0
    if root is None:
        return 0
    base = Path(root).resolve()
    for p in paths:
        if not p:
            continue
        path = Path(p).resolve()
        if base not in path.parents:
            log.warning("not deleting %s: outside the store's audio folder", p)
            continue
        try:
            path.unlink()
            n += 1
        except FileNotFoundError:
            pass
        except OSError as e:
            log.error("could not delete kept audio %s: %s", p, e)
            continue
        _rmdir_empty(path.parent, base)
    return n


def remove_session_dir(root: Path, session_id: str) -> int:
    """A deleted call's audio folder, whatever is left in it; how many files were in it."""
    d = Path(root) / session_id
    if not _safe(session_id) or not d.is_dir():
        return 0
    n = 0
    for f in d.iterdir():
        if f.is_file():
            f.unlink(missing_ok=True)
            n += 1
    _rmdir_empty(d, Path(root).resolve())
    return n


def sweep(root: Path, before: float) -> int:
    """Audio files last written before ``before`` (a crash between the file and its row leaves no row to
    expire them)."""
    root = Path(root)
    if not root.is_dir():
        return 0
    n = 0
    for f in root.glob("*/*.wav"):
        try:
            if f.stat().st_mtime < before:
                f.unlink()
                n += 1
                _rmdir_empty(f.parent, root.resolve())
        except OSError:
            continue
    return n


def session_dirs(root: Path, before: float) -> list[str]:
    """Names of the call folders under ``root`` last changed before ``before``."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        try:
            if d.is_dir() and _safe(d.name) and d.stat().st_mtime < before:
                out.append(d.name)
        except OSError:
            continue
    return out


def _rmdir_empty(d: Path, base: Path) -> None:
    d = d.resolve()
    if d != base and base in d.parents:
        try:
            d.rmdir()
        except OSError:
            pass  # not empty


def age_s(path: Path) -> float:
    return time.time() - path.stat().st_mtime
