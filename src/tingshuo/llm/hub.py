"""Bigger chat models, one command away: ``tingshuo models pull NAME`` fetches a GGUF from the Hugging Face hub
(or the mirror in ``HF_ENDPOINT``) into the cache, checked against the sha256 the hub publishes for it.

The downloading itself is huggingface_hub's (``hf_hub_download``: resumable ``.incomplete`` files, retries with a
Range request after a cut connection, its progress bar, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, tokens); this module
adds the curated list, where the files go, the hash check and the stamp that spares later starts from hashing
gigabytes again (the same ``.ok`` stamp as the bundled weights, :func:`tingshuo.assets.stamped_sha256`).

A model is named by a catalogue name (``qwen3-4b``) or by ``hf:OWNER/REPO/FILE.gguf`` for any other GGUF on the hub;
``llm.model`` takes either once it is pulled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tingshuo.llm.catalog import CATALOGUE, SPLIT, HubError, HubModel, resolve

__all__ = ["CATALOGUE", "HubError", "HubModel", "gguf_for", "installed", "local_path", "pull", "resolve"]


def model_dir(cache_dir: Path, model: HubModel) -> Path:
    return Path(cache_dir) / "models" / model.repo.replace("/", "--")


def local_path(cache_dir: Path, name: str) -> Path | None:
    """The first GGUF of a pulled, verified model; None when it is not (completely) pulled."""
    from tingshuo.assets import stamped_sha256

    model = resolve(name)
    d = model_dir(cache_dir, model)
    if all((d / f).is_file() and stamped_sha256(d / f) for f in model.files):
        return d / model.files[0]
    return None


def gguf_for(cache_dir: Path, name: str) -> Path:
    path = local_path(cache_dir, name)
    if path is None:
        raise FileNotFoundError(f"llm.model = {name!r} is not pulled yet: run `tingshuo models pull {name}` "
                                "(it downloads from the Hugging Face hub, or HF_ENDPOINT)")
    return path


def pull(name: str, cache_dir: Path, *, progress: bool = True) -> Path:
    """Download ``name`` into ``cache_dir/models`` and verify it; its first GGUF. Already pulled: nothing is
    fetched. A file whose sha256 differs from the hub's is deleted and refused."""
    from huggingface_hub import HfApi, constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    from tingshuo.assets import stamped_sha256, write_stamp

    done = local_path(cache_dir, name)
    if done is not None:
        return done
    model = resolve(name)
    d = model_dir(cache_dir, model)
    if constants.HF_HUB_OFFLINE:
        raise HubError(f"HF_HUB_OFFLINE is set, so {name} cannot be downloaded; unset it, or copy the GGUF here and "
                       "set llm.gguf")
    try:
        infos = {i.path: i for i in HfApi().get_paths_info(model.repo, list(model.files), expand=True)}
    except HfHubHTTPError as e:
        raise HubError(f"{constants.ENDPOINT}: cannot list {model.repo} ({e})") from e
    except OSError as e:  # no network, a refused connection
        raise HubError(f"{constants.ENDPOINT} cannot be reached ({e}); set HF_ENDPOINT for a mirror") from e
    for f in model.files:
        info = infos.get(f)
        if info is None:
            raise HubError(f"{model.repo} has no file {f} on {constants.ENDPOINT}")
        want = info.lfs.sha256 if getattr(info, "lfs", None) else None
        if not want:
            raise HubError(f"{model.repo}/{f}: the hub gives no sha256 for it, so it cannot be verified; not pulled")
        dest = d / f
        if dest.is_file() and stamped_sha256(dest) == want:
            continue
        try:
            got_path = Path(hf_hub_download(model.repo, f, local_dir=d))
        except (HfHubHTTPError, OSError) as e:
            raise HubError(f"downloading {model.repo}/{f} failed ({e}); run the same command again to resume") from e
        got = _sha256(got_path, progress=progress)
        if got != want:
            got_path.unlink(missing_ok=True)
            raise HubError(f"{model.repo}/{f}: sha256 {got} is not the hub's {want}; the file was deleted")
        if f == model.files[0]:
            with open(got_path, "rb") as fh:
                if fh.read(4) != b"GGUF":
                    got_path.unlink(missing_ok=True)
                    raise HubError(f"{model.repo}/{f} is not a GGUF file; the file was deleted")
        write_stamp(got_path, got)
    return d / model.files[0]


def installed(cache_dir: Path) -> list[tuple[str, Path, int]]:
    """Pulled models: (name to select it with, first GGUF, bytes of all its parts)."""
    root = Path(cache_dir) / "models"
    by_spec = {m.spec: m.name for m in CATALOGUE.values()}
    out = []
    for ok in sorted(root.glob("*/*.gguf.ok")) if root.is_dir() else []:
        gguf = ok.with_suffix("")
        m = SPLIT.match(gguf.name)
        if m and int(m["i"]) != 1:
            continue
        spec = f"hf:{gguf.parent.name.replace('--', '/', 1)}/{gguf.name}"
        name = by_spec.get(spec, spec)
        if local_path(cache_dir, name) is None:
            continue
        parts = resolve(name).files
        out.append((name, gguf, sum((gguf.parent / p).stat().st_size for p in parts)))
    return out


def _sha256(path: Path, *, progress: bool) -> str:
    from tqdm import tqdm

    h = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, disable=not progress,
                                     desc=f"verifying {path.name}") as bar:
        while chunk := f.read(8 << 20):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()
