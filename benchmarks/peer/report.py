"""Tables of figures: one row per figure, one column per system variant, ratios against fl-async.

Ratio = other system's value / fl-async's value, so for times, memory and CPU (all "lower is better" here)
a ratio above 1 means fl-async did better. A value that hit a bound is printed as ``> X`` (a lower bound),
and a missing one as ``n/a``.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

#: column keys, in display order
FLASYNC, FLOWER_GUIDE, FLOWER_FAST, FLOWER_LATEST = "fl-async", "flower-guide", "flower-fast", "flower-latest"


@dataclass
class Value:
    """One measured figure.

    Attributes:
        v: the number (units given by the row), or ``None`` when not measured.
        lower_bound: the real value is larger than ``v`` (a wait hit its bound).
        note: short remark shown in the notes under the table.
    """

    v: float | None = None
    lower_bound: bool = False
    note: str = ""

    def fmt(self) -> str:
        """Human form: ``n/a``, ``> 45.0`` or ``1.234``."""
        if self.v is None:
            return "n/a"
        return ("> " if self.lower_bound else "") + _num(self.v)


def _num(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 0.1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def ratio(other: Value, base: Value) -> str:
    """``other / base`` formatted (``n/a`` when either is missing; ``> r`` when only ``other`` is a bound)."""
    if other.v is None or base.v is None or base.v == 0:
        return "n/a"
    r = other.v / base.v
    if base.lower_bound and other.lower_bound:
        return "n/a"
    if base.lower_bound:
        return f"< {r:.1f}x"
    return ("> " if other.lower_bound else "") + (f"{r:.1f}x" if r >= 10 else f"{r:.2f}x")


@dataclass
class Table:
    """One workload's results.

    Attributes:
        title: workload title.
        columns: column key -> header text (e.g. ``FLOWER_GUIDE -> "Flower (guide, sleep 3 s)"``).
        rows: list of ``(figure, {column key: Value})``.
        notes: lines printed under the table.
    """

    title: str
    columns: dict[str, str]
    rows: list[tuple[str, dict[str, Value]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: str, **values: Value) -> None:
        """Add a row; keyword names are column keys with ``-`` written as ``_``."""
        self.rows.append((figure, {k.replace("_", "-"): v for k, v in values.items()}))

    def render(self) -> str:
        """The table as Markdown (pipes), with ratio columns after each non-fl-async column."""
        others = [c for c in self.columns if c != FLASYNC]
        header = ["figure", self.columns.get(FLASYNC, FLASYNC)]
        for c in others:
            header += [self.columns[c], "ratio"]
        lines = [
            f"### {self.title}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for figure, vals in self.rows:
            base = vals.get(FLASYNC, Value())
            cells = [figure, base.fmt()]
            for c in others:
                other = vals.get(c, Value())
                cells += [other.fmt(), ratio(other, base)]
            lines.append("| " + " | ".join(cells) + " |")
        notes = list(self.notes)
        for figure, vals in self.rows:
            for c, val in vals.items():
                if val.note:
                    notes.append(f"{figure} [{self.columns.get(c, c)}]: {val.note}")
        if notes:
            lines.append("")
            lines += [f"- {n}" for n in notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """Plain-data form for ``--json``."""
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": [{"figure": f, "values": {k: asdict(v) for k, v in vals.items()}} for f, vals in self.rows],
            "notes": self.notes,
        }


def median(xs: list[float]) -> float | None:
    """Median, or ``None`` for an empty list."""
    return statistics.median(xs) if xs else None


def p99(xs: list[float]) -> float | None:
    """99th percentile with linear interpolation (with 5 samples this is close to the slowest)."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * 0.99
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def dump_json(tables: list[Table], meta: dict[str, Any], path: str) -> None:
    """Write all tables plus run metadata as JSON (``-`` = stdout)."""
    data = json.dumps({"meta": meta, "tables": [t.to_json() for t in tables]}, indent=2)
    if path == "-":
        print(data)
    else:
        with open(path, "w") as f:
            f.write(data + "\n")
