"""Benchmarks: `python -m bench NAME` runs bench/NAME.py, prints a table and writes JSON
under bench/results/. Each benchmark names its upstream anchor and, where one exists,
measures the peer side by side in the same run."""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


@dataclass
class Report:
    name: str
    anchor: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *row: Any) -> None:
        self.rows.append(list(row))

    def emit(self) -> Path:
        widths = [max(len(_fmt(c)) for c in [col, *[r[i] for r in self.rows]])
                  for i, col in enumerate(self.columns)]
        print(f"# {self.name}  (anchor: {self.anchor})")
        print("  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True)))
        for r in self.rows:
            print("  ".join(_fmt(v).ljust(w) for v, w in zip(r, widths, strict=True)))
        for n in self.notes:
            print(f"note: {n}")
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{self.name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
        out.write_text(json.dumps({
            "name": self.name, "anchor": self.anchor, "machine": platform.node(),
            "columns": self.columns, "rows": self.rows, "notes": self.notes,
        }, indent=2))
        print(f"wrote {out}")
        return out


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def percentile(values: list[float], p: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]
