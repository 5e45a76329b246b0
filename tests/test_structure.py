"""The code's structure, checked: no import cycles between tingshuo's modules (function-level and type-only imports
count: they hide a cycle, they do not remove it), and no module reaching into another's private names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "tingshuo"


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        name = ".".join(f.relative_to(SRC.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module → the tingshuo modules it imports anywhere in its body."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                for a in node.names:
                    edges[m].add(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base)
            elif isinstance(node, ast.Import):
                edges[m].update(a.name for a in node.names)
    return {m: {t for t in ts if t in mods and t != m} for m, ts in edges.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            comp.append(v)
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    graph = import_graph()
    assert graph["tingshuo.engine.session"]  # the graph is really read
    assert not cycles(graph), cycles(graph)


def test_no_module_imports_another_modules_private_names():
    """``from tingshuo.x import _y`` across modules (a private *module* of the same package, such as the vendored
    ``audio/_whisper_features.py``, is fine)."""
    wrong = []
    for m, f in _modules().items():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tingshuo"):
                wrong += [(m, node.module, a.name) for a in node.names if a.name.startswith("_")]
    assert not wrong, wrong


def test_no_code_reads_a_session_stack_or_stores_privates():
    """Tests and benchmarks included: what they need is public (``Session.drain_events``, ``TranscriptStore.
    with_connection``)."""
    pattern = re.compile(r"\b(session|stack|store|server|s)\._[a-z]")
    wrong = []
    for d in ("src", "tests", "bench"):
        for f in (ROOT / d).rglob("*.py"):
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                own = f.name == "session.py" and "session." + "_emit" in line  # the module's own helper
                if pattern.search(line) and not own and f != Path(__file__).resolve():
                    wrong.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not wrong, wrong


def test_no_module_is_a_room_for_everything():
    """A module over 700 lines has become several jobs in one file; the session is a façade over its stages."""
    sizes = {str(f.relative_to(SRC)): len(f.read_text(encoding="utf-8").splitlines()) for f in SRC.rglob("*.py")}
    assert {f: n for f, n in sizes.items() if n > 700} == {}
    assert sizes["engine/session.py"] <= 450
