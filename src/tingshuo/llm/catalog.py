"""The chat models ``tingshuo models pull`` knows by name, and how any other hub GGUF is named
(``hf:OWNER/REPO/FILE.gguf``). No imports from tingshuo: the settings validate ``llm.model`` with it."""

from __future__ import annotations

import re
from dataclasses import dataclass

SPLIT = re.compile(r"^(?P<stem>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.gguf$")


class HubError(RuntimeError):
    """A model that cannot be pulled or is not pulled yet, with what to do about it."""


@dataclass(frozen=True)
class HubModel:
    name: str
    repo: str
    files: tuple[str, ...]  # a split GGUF lists every part; llama.cpp opens the first and finds the rest beside it
    size_gb: float  # Q4_K_M on disk, and about the RAM it needs on top of the bundled models
    licence: str
    note: str = ""

    @property
    def spec(self) -> str:
        return f"hf:{self.repo}/{self.files[0]}"


# Chosen from their model cards for Chinese and English chat at laptop sizes (Q4_K_M, the official GGUF repos;
# file names as those repos list them in 2026-12: a renamed file fails with the hub's answer naming it).
CATALOGUE: dict[str, HubModel] = {m.name: m for m in (
    HubModel("qwen2.5-3b-instruct", "Qwen/Qwen2.5-3B-Instruct-GGUF", ("qwen2.5-3b-instruct-q4_k_m.gguf",), 2.1,
             "Qwen Research License (non-commercial use)", "fits 8 GB RAM; Chinese and English"),
    HubModel("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct-GGUF",
             ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf"),
             4.7, "Apache-2.0", "16 GB RAM or a GPU; much better world knowledge"),
    HubModel("qwen3-4b", "Qwen/Qwen3-4B-GGUF", ("Qwen3-4B-Q4_K_M.gguf",), 2.5, "Apache-2.0",
             "hybrid thinking model: replies are asked for without thinking"),
    HubModel("qwen3-8b", "Qwen/Qwen3-8B-GGUF", ("Qwen3-8B-Q4_K_M.gguf",), 5.0, "Apache-2.0",
             "16 GB RAM or a GPU"),
)}


def resolve(name: str) -> HubModel:
    """A catalogue entry, or the model an ``hf:OWNER/REPO/FILE.gguf`` spec names (a split file: all its parts)."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    if not name.startswith("hf:"):
        raise HubError(f"unknown model {name!r}: pull one of {', '.join(CATALOGUE)}, or any GGUF on the hub as "
                       "hf:OWNER/REPO/FILE.gguf")
    parts = name[3:].split("/")
    if len(parts) < 3 or not parts[-1].endswith(".gguf") or any(p in ("", ".", "..") for p in parts):
        raise HubError(f"{name!r}: write a hub file as hf:OWNER/REPO/FILE.gguf")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    files: tuple[str, ...] = (filename,)
    m = SPLIT.match(filename)
    if m:  # llama.cpp needs every part beside the first
        n = int(m["n"])
        files = tuple(f"{m['stem']}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1))
    return HubModel(name, repo, files, 0.0, "see the model card")
