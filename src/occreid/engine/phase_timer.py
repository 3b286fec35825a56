"""Wall-clock time per named phase of a run (e.g. the phases of `occreid eval`), passed down explicitly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseTimer:
    """Seconds per phase, summed over repeated entries: `with timer.phase("forward"): ...`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def as_dict(self) -> dict[str, float]:
        """Phase -> seconds (rounded to ms), in the order the phases first ran, plus `total`."""
        out = {k: round(v, 3) for k, v in self.seconds.items()}
        out["total"] = round(sum(self.seconds.values()), 3)
        return out


def shares_table(timing: dict[str, float]) -> str:
    """Markdown table of a `PhaseTimer.as_dict()`: seconds and share of the total per phase."""
    total = timing.get("total") or sum(v for k, v in timing.items() if k != "total") or 1.0
    lines = ["| phase | seconds | share |", "|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {100 * v / total:.1f} % |" for k, v in timing.items() if k != "total"]
    lines.append(f"| total | {total:.3f} | 100 % |")
    return "\n".join(lines)
