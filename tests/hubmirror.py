"""A Hugging Face hub mirror on loopback, for `tingshuo models pull` (HF_ENDPOINT points at it).

It answers the two things huggingface_hub asks of a hub when it downloads one file: ``POST /api/models/{repo}/
paths-info/{rev}`` (each file's size and the sha256 of its LFS object) and ``HEAD``/``GET /{repo}/resolve/{rev}/
{file}`` (commit and ETag headers, the bytes, Range requests for resuming). It can cut the first download of each
file halfway (``cut``) and publish wrong hashes (``lie``), and records every request, so a test can see a resume
happen and see that nothing was asked at all.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubMirror:
    def __init__(self, repos: dict[str, dict[str, Path]], *, cut: bool = False, lie: bool = False) -> None:
        self.repos, self.cut, self.lie = repos, cut, lie
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self._sha: dict[Path, str] = {}
        self._cut_done: set[str] = set()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                mirror.requests.append(("POST", self.path, None))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                repo, files = mirror._repo(self.path.split("/paths-info/")[0].removeprefix("/api/models/"))
                if files is None or "/paths-info/" not in self.path:
                    return self._send(404, b'{"error": "Repository not found"}')
                wanted = parse_qs(body).get("paths", [])
                out = [{"type": "file", "path": p, "size": files[p].stat().st_size, "oid": "1" * 40,
                        "lfs": {"oid": mirror.sha(files[p]), "size": files[p].stat().st_size, "pointerSize": 134}}
                       for p in wanted if p in files]
                self._send(200, json.dumps(out).encode(), "application/json")

            def do_HEAD(self) -> None:
                self._file(head=True)

            def do_GET(self) -> None:
                self._file(head=False)

            def _file(self, head: bool) -> None:
                mirror.requests.append(("HEAD" if head else "GET", self.path, self.headers.get("Range")))
                if "/resolve/" not in self.path:
                    return self._send(404, b"{}")
                repo_part, rest = self.path.split("/resolve/", 1)
                _, files = mirror._repo(repo_part.lstrip("/"))
                name = unquote(rest.split("/", 1)[1]) if "/" in rest else ""
                if files is None or name not in files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path = files[name]
                size = path.stat().st_size
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0] or 0)
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{mirror.sha(path)}"')
                self.send_header("Content-Length", str(size - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if head:
                    return
                key = f"{repo_part}/{name}"
                stop = size
                if mirror.cut and key not in mirror._cut_done and not start:
                    mirror._cut_done.add(key)
                    stop = size // 2  # the connection drops halfway through the first download
                with open(path, "rb") as f:
                    f.seek(start)
                    left = stop - start
                    while left > 0:
                        chunk = f.read(min(1 << 20, left))
                        if not chunk:
                            break
                        try:
                            self.wfile.write(chunk)
                        except (BrokenPipeError, ConnectionResetError):
                            return
                        left -= len(chunk)
                if stop < size:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _repo(self, path: str) -> tuple[str, dict[str, Path] | None]:
        repo = "/".join(path.strip("/").split("/")[:2])
        return repo, self.repos.get(repo)

    def sha(self, path: Path) -> str:
        if path not in self._sha:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(8 << 20):
                    h.update(chunk)
            self._sha[path] = h.hexdigest()
        return ("f" * 64) if self.lie else self._sha[path]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "HubMirror":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
