"""Persisted KV state of fixed prompt prefixes, as llama.cpp sequence state files.

Why: prefill is compute-bound on a CPU (~50–60 tokens/s for the 1.5B on 2 cores), so a fresh process paid ~20 s
for the safety guard's 1,000-token prompt and ~5 s for a persona's system prompt before it could answer its first
turn; a persona switch re-read the new persona's prompt every time. Loading a saved state takes milliseconds.

One file per prefix in ``<cache_dir>/prompt-state/``: ``<key>.bin`` (``llama_state_seq_save_file``: the prefix's
tokens and its KV cells, not the logits that ``Llama.save_state()`` would copy too) and ``<key>.json`` (its
sha256 and size). The key hashes everything the cells depend on: the weights' fingerprint, the llama.cpp build,
the context settings and the prefix's tokens, so a changed key simply misses. A file whose sha256 or tokens do
not match (a crash mid-write, another build, bit rot) is ignored with a log line and written again; llama.cpp
never reads a file we have not verified. The directory is kept under a size cap, least recently used first.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def model_fingerprint(path: Path) -> str:
    """Cheap identity of a GGUF: the sha256 checked at assembly when the asset stamped one, else name, size and
    the first and last MiB (hashing 1 GB at every start would cost seconds)."""
    from tingshuo.assets import stamped_sha256

    stamped = stamped_sha256(path)
    if stamped:
        return stamped
    st = path.stat()
    h = hashlib.sha256(f"{path.name}:{st.st_size}".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, st.st_size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class PromptStates:
    """Saves and restores the KV cells of sequence 0 of a ``llama_cpp.Llama`` for given prefix tokens.

    ``identity``: what besides the tokens the cells depend on (model fingerprint, llama.cpp version, settings).
    The caller holds the model's lock around :meth:`load` and :meth:`save`.
    """

    def __init__(self, root: Path, identity: dict, max_bytes: int) -> None:
        self.root = root
        self.identity = json.dumps(identity, sort_keys=True)
        self.max_bytes = max_bytes
        self._verified: set[tuple[str, int, int]] = set()  # (name, size, mtime_ns) checked in this process

    def _key(self, tokens: list[int]) -> str:
        h = hashlib.sha256(self.identity.encode())
        h.update((ctypes.c_int32 * len(tokens))(*tokens))
        return h.hexdigest()[:32]

    def _drop(self, key: str) -> None:
        for suffix in (".bin", ".json"):
            (self.root / f"{key}{suffix}").unlink(missing_ok=True)

    def load(self, llm, tokens: list[int]) -> bool:
        """Restore the cells of ``tokens`` into ``llm`` (whose cache is cleared first); False when there is no
        valid file, leaving ``llm`` empty."""
        import llama_cpp

        key = self._key(tokens)
        path, meta_path = self.root / f"{key}.bin", self.root / f"{key}.json"
        if not path.exists():
            return False
        try:
            meta = json.loads(meta_path.read_text())
            st = path.stat()
            stamp = (path.name, st.st_size, st.st_mtime_ns)
            if stamp not in self._verified:
                if meta.get("bytes") != st.st_size or meta.get("sha256") != _sha256(path):
                    raise ValueError("its sha256 does not match")
                self._verified.add(stamp)
        except (OSError, ValueError) as e:
            log.warning("prompt state %s ignored (%s); evaluating the prompt again", path.name, e)
            self._drop(key)
            return False
        _clear(llm)
        out = (llama_cpp.llama_token * len(tokens))()
        n = ctypes.c_size_t(0)
        read = llama_cpp.llama_state_seq_load_file(llm._ctx.ctx, str(path).encode(), 0, out, len(tokens),
                                                   ctypes.byref(n))
        if read == 0 or n.value != len(tokens) or list(out[: n.value]) != tokens:
            log.warning("prompt state %s ignored (llama.cpp did not accept it); evaluating the prompt again",
                        path.name)
            _clear(llm)
            self._drop(key)
            return False
        llm.input_ids[: len(tokens)] = tokens
        llm.n_tokens = len(tokens)
        llm._requires_eval = True  # no logits were restored: the next call evaluates at least one token
        os.utime(path)  # recently used: kept longest by the size cap
        return True

    def save(self, llm, tokens: list[int]) -> None:
        """Write the cells of ``tokens``, which must be exactly what ``llm``'s sequence 0 holds now."""
        import llama_cpp

        key = self._key(tokens)
        tmp = self.root / f".{key}.{os.getpid()}.tmp"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            arr = (llama_cpp.llama_token * len(tokens))(*tokens)
            if llama_cpp.llama_state_seq_save_file(llm._ctx.ctx, str(tmp).encode(), 0, arr, len(tokens)) == 0:
                raise OSError("llama.cpp wrote nothing")
            meta = {"sha256": _sha256(tmp), "bytes": tmp.stat().st_size, "tokens": len(tokens)}
            os.replace(tmp, self.root / f"{key}.bin")  # the .bin before its .json: a half pair is never valid
            (self.root / f"{key}.json").write_text(json.dumps(meta))
            self._evict(keep=key)
        except OSError as e:  # a read-only or full cache costs speed, never the turn
            log.warning("could not save the prompt state in %s: %s", self.root, e)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _evict(self, keep: str) -> None:
        files = sorted(self.root.glob("*.bin"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for p in files:
            if total <= self.max_bytes:
                break
            if p.stem != keep:
                total -= p.stat().st_size
                self._drop(p.stem)


def _clear(llm) -> None:
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    llm.reset()
