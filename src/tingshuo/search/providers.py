"""Search providers: a local SQLite FTS5 index (default), keyless web metasearch (ddgs) and web APIs (SearXNG,
Tavily, Brave). Only the configured provider is built; a web provider is never contacted unless chosen."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import httpx

from tingshuo.config import SearchConfig


class SearchError(RuntimeError):
    """The provider could not be asked (down, timed out, bad key); the message is meant for users."""


@dataclass
class SearchResult:
    title: str
    snippet: str
    source: str  # a short name to say aloud: "新华网", "BBC", the file's name
    url: str = ""
    published: str | None = None  # ISO date when known

    def to_dict(self) -> dict:
        return asdict(self)


class SearchProvider(Protocol):
    name: str

    def search(self, query: str, k: int = 3) -> list[SearchResult]:
        """Blocking; raises SearchError when the provider cannot answer (an empty list means: nothing found)."""


# -- local index ---------------------------------------------------------------------------------------------

def _tokens(text: str) -> str:
    """Words for FTS5: jieba cuts Chinese into words (FTS5's unicode61 tokenizer would take a whole run of Han
    characters as one token, and its trigram tokenizer cannot match two-character words like 天气)."""
    import jieba

    jieba.setLogLevel(60)
    return " ".join(w for w in jieba.cut_for_search(text.lower()) if w.strip() and re.search(r"\w", w))


class LocalIndex:
    """A document collection in one SQLite file with an FTS5 (BM25) index over jieba-segmented text.

    Users fill it with their own notes, pages and news feeds (`tingshuo search add FILE|FEED_URL…`): plain text
    and Markdown files (title = first line), JSON lines ({"title", "text", "source", "url", "published"}),
    RSS/Atom feeds read by feedparser.
    """

    name = "local"

    def __init__(self, path: Path, max_age_days: float | None = None) -> None:
        self.path = Path(path)
        # documents published (or, without a date, added) longer ago than this are not used: the index answers
        # time-sensitive questions, and last month's weather report is no answer to today's
        self.max_age_days = max_age_days
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS docs (id INTEGER PRIMARY KEY, title TEXT, body TEXT, source TEXT, url TEXT,
                                             published TEXT, added REAL);
            CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(title, body, tokenize='unicode61');
        """)

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM docs").fetchone()[0]

    def add(self, title: str, text: str, source: str, url: str = "", published: str | None = None) -> int:
        with self._lock, self._db:
            cur = self._db.execute("INSERT INTO docs (title, body, source, url, published, added) VALUES (?,?,?,?,?,?)",
                                   (title, text, source, url, published, time.time()))
            rid = cur.lastrowid
            self._db.execute("INSERT INTO docs_fts (rowid, title, body) VALUES (?,?,?)",
                             (rid, _tokens(title), _tokens(text)))
        return int(rid or 0)

    def add_file(self, path: Path) -> int:
        """Adds one file's documents; returns how many."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".jsonl", ".json"):
            n = 0
            for line in text.splitlines():
                if line.strip():
                    d = json.loads(line)
                    self.add(d.get("title", ""), d["text"], d.get("source", path.stem), d.get("url", ""), d.get("published"))
                    n += 1
            return n
        if path.suffix in (".xml", ".rss", ".atom"):
            return self.add_feed(str(path))
        first, _, rest = text.strip().partition("\n")
        self.add(first.lstrip("# ").strip(), rest.strip() or first, path.stem,
                 path.resolve().as_uri(), datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).date().isoformat())
        return 1

    def add_feed(self, url_or_path: str) -> int:
        """An RSS/Atom feed (URL or file): one document per entry, the feed's title as the source."""
        import feedparser

        feed = feedparser.parse(url_or_path)
        if feed.bozo and not feed.entries:
            raise SearchError(f"not a readable feed: {url_or_path} ({feed.bozo_exception})")
        source = feed.feed.get("title", url_or_path)
        for e in feed.entries:
            body = re.sub(r"<[^>]+>", " ", e.get("summary", "") or e.get("description", ""))
            date = None
            if e.get("published_parsed"):
                date = time.strftime("%Y-%m-%d", e.published_parsed)
            self.add(e.get("title", ""), body.strip() or e.get("title", ""), source, e.get("link", ""), date)
        return len(feed.entries)

    def search(self, query: str, k: int = 3) -> list[SearchResult]:
        words = [w for w in _tokens(query).split() if len(w) > 1 or not w.isascii()]
        if not words:
            return []
        # any of the words, ranked by BM25 (a question rarely shares every word with the answer's text)
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in dict.fromkeys(words))
        since = None if self.max_age_days is None else time.time() - self.max_age_days * 86400
        with self._lock:
            rows = self._db.execute(
                "SELECT d.title, d.body, d.source, d.url, d.published, bm25(docs_fts, 3.0, 1.0) AS r FROM docs_fts "
                "JOIN docs d ON d.id = docs_fts.rowid WHERE docs_fts MATCH ? AND (? IS NULL OR "
                "coalesce(julianday(d.published), julianday(d.added, 'unixepoch')) >= julianday(?, 'unixepoch')) "
                "ORDER BY r LIMIT ?", (match, since, since, k)).fetchall()
        return [SearchResult(t, _snippet(b), s, u, p) for t, b, s, u, p, _ in rows]


def _snippet(text: str, n: int = 300) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= n else text[:n] + "…"


# -- web providers --------------------------------------------------------------------------------------------

class _Http:
    name = "http"

    def __init__(self, cfg: SearchConfig) -> None:
        self.cfg = cfg
        self.client = httpx.Client(timeout=httpx.Timeout(cfg.timeout_s, connect=min(3.0, cfg.timeout_s)))

    def _get_json(self, method: str, url: str, **kw) -> dict:
        try:
            resp = self.client.request(method, url, **kw)
            resp.raise_for_status()
            return resp.json()
        except httpx.HTTPStatusError as e:
            raise SearchError(f"{self.name} answered {e.response.status_code}") from e
        except (httpx.HTTPError, ValueError) as e:
            raise SearchError(f"{self.name} could not be reached: {e}") from e


def _host(url: str) -> str:
    return re.sub(r"^www\.", "", httpx.URL(url).host) if url else ""


class SearxngSearch(_Http):
    """A SearXNG instance's JSON API (``search.formats: [json]`` must be enabled in its settings.yml)."""

    name = "searxng"

    def search(self, query: str, k: int = 3) -> list[SearchResult]:
        data = self._get_json("GET", self.cfg.url.rstrip("/") + "/search", params={"q": query, "format": "json"})
        return [SearchResult(r.get("title", ""), _snippet(r.get("content", "")), _host(r.get("url", "")), r.get("url", ""),
                             r.get("publishedDate")) for r in data.get("results", [])[:k]]


class TavilySearch(_Http):
    name = "tavily"

    def search(self, query: str, k: int = 3) -> list[SearchResult]:
        if not self.cfg.api_key:
            raise SearchError("search.api_key is not set for Tavily")
        data = self._get_json("POST", "https://api.tavily.com/search",
                              json={"query": query, "max_results": k},
                              headers={"Authorization": f"Bearer {self.cfg.api_key}"})
        return [SearchResult(r.get("title", ""), _snippet(r.get("content", "")), _host(r.get("url", "")), r.get("url", ""),
                             r.get("published_date")) for r in data.get("results", [])[:k]]


class BraveSearch(_Http):
    name = "brave"

    def search(self, query: str, k: int = 3) -> list[SearchResult]:
        if not self.cfg.api_key:
            raise SearchError("search.api_key is not set for Brave")
        data = self._get_json("GET", "https://api.search.brave.com/res/v1/web/search", params={"q": query, "count": k},
                              headers={"X-Subscription-Token": self.cfg.api_key, "Accept": "application/json"})
        return [SearchResult(r.get("title", ""), _snippet(re.sub(r"<[^>]+>", "", r.get("description", ""))),
                             (r.get("profile") or {}).get("name") or _host(r.get("url", "")), r.get("url", ""),
                             r.get("page_age")) for r in (data.get("web") or {}).get("results", [])[:k]]


class DdgsSearch:
    """Keyless web search through the ``ddgs`` metasearch library (MIT; DuckDuckGo, Bing, Brave, Mojeek… behind one
    call). Chosen by ``search.provider = "ddgs"`` for users who are online; imported only then, so a machine that
    never chose it never loads it, let alone sends a query.

    Why the library and not our own scraping: it keeps up with the engines' page changes and rate limits, which
    is the whole maintenance cost of a keyless search.
    """

    name = "ddgs"

    def __init__(self, cfg: SearchConfig, client: object | None = None) -> None:
        self.cfg = cfg
        if client is None:
            try:
                from ddgs import DDGS
            except ImportError as e:  # pragma: no cover - ddgs is a dependency; a trimmed install may lack it
                raise SearchError("search.provider = \"ddgs\" needs the ddgs package (pip install ddgs)") from e
            client = DDGS(timeout=max(1, round(cfg.timeout_s)))
        self.client = client

    def region(self, query: str) -> str:
        """The engines' region: Chinese results for a Chinese question, else worldwide (``search.region`` wins)."""
        if self.cfg.region:
            return self.cfg.region
        return "cn-zh" if re.search(r"[\u4e00-\u9fff]", query) else "wt-wt"

    def search(self, query: str, k: int = 3) -> list[SearchResult]:
        from ddgs.exceptions import DDGSException

        try:
            rows = self.client.text(query, region=self.region(query), safesearch="moderate",  # type: ignore[attr-defined]
                                    max_results=k, backend=self.cfg.backend)
        except Exception as e:  # a network or parsing failure inside an engine: the provider is down for now
            if isinstance(e, DDGSException) and "no results" in str(e).lower():
                return []  # ddgs raises when every engine answered with nothing
            raise SearchError(f"ddgs could not search: {e}") from e
        out = []
        for r in rows[:k]:
            url = r.get("href") or r.get("url") or ""
            out.append(SearchResult(r.get("title", ""), _snippet(r.get("body", "")), r.get("source") or _host(url), url,
                                    r.get("date") or None))
        return out


def load_provider(cfg: SearchConfig, cache_dir: Path) -> SearchProvider | None:
    if not cfg.enabled or cfg.provider == "none":
        return None
    if cfg.provider == "local":
        return LocalIndex(cfg.index_path or cache_dir / "search" / "index.sqlite", cfg.max_age_days)
    return {"searxng": SearxngSearch, "tavily": TavilySearch, "brave": BraveSearch,
            "ddgs": DdgsSearch}[cfg.provider](cfg)
