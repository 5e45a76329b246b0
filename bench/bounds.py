"""Figures with a target: the timing bounds that tests no longer assert.

A test must hold on a loaded 2-core machine, so it asserts behaviour (the reply stopped, nothing was sent after
the stop, the CPU went quiet). How *fast* and how *precise* is measured here, on a quiet machine, against the
bound the test used to carry; each row names the test it came from (tests/README.md lists them all). A benchmark
prints its rows as a table and writes them into its JSON; ``--strict`` makes a failed bound the exit status.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass
class Bound:
    name: str  # what is measured, in a user's words
    value: float | None  # None: could not be measured (a failure)
    op: str
    limit: float
    unit: str
    origin: str  # the test that used to assert it

    @property
    def ok(self) -> bool:
        return self.value is not None and _OPS[self.op](self.value, self.limit)


@dataclass
class Bounds:
    rows: list[Bound] = field(default_factory=list)

    def check(self, name: str, value: float | None, op: str, limit: float, unit: str, origin: str) -> Bound:
        assert op in _OPS, op
        row = Bound(name, None if value is None else round(float(value), 3), op, limit, unit, origin)
        self.rows.append(row)
        return row

    @property
    def failed(self) -> list[Bound]:
        return [r for r in self.rows if not r.ok]

    def table(self, title: str = "bounds") -> str:
        lines = [f"\n[{title}]", f"  {'':4s} {'measured':52s} {'value':>10s}   {'bound':12s} from"]
        for r in self.rows:
            v = "n/a" if r.value is None else f"{r.value:g}"
            lines.append(f"  {'ok' if r.ok else 'FAIL':4s} {r.name:52s} {v:>10s}   {r.op} {r.limit:g} {r.unit:6s} "
                         f"{r.origin}")
        return "\n".join(lines)

    def as_json(self) -> list[dict]:
        return [asdict(r) | {"ok": r.ok} for r in self.rows]
