"""The fault suite's figures: one row a scenario, printed as one table at the end of the run."""

from __future__ import annotations

import dataclasses
import time

COLUMNS = (
    ("events", "events"),
    ("commands", "commands"),
    ("kills", "kills"),
    ("connection_closes", "conn. closes"),
    ("db_sessions_ended", "db sessions ended"),
    ("node_stops", "node stops"),
    ("reconnects", "reconnects"),
    ("lost", "lost"),
    ("doubled", "doubled"),
    ("invariant_breaks", "invariant breaks"),
    ("seconds", "seconds"),
)


@dataclasses.dataclass
class Figures:
    """What one scenario did and found. `events`: appended to both services' logs; `commands`:
    HTTP commands the services acknowledged; `kills`: service processes SIGKILLed; `reconnects`:
    service connections to the broker seen again after a fault; `lost`, `doubled`,
    `invariant_breaks`: what the checks found (each must be 0)."""

    scenario: str
    events: int = 0
    commands: int = 0
    kills: int = 0
    connection_closes: int = 0
    db_sessions_ended: int = 0
    node_stops: int = 0
    reconnects: int = 0
    lost: int = 0
    doubled: int = 0
    invariant_breaks: int = 0
    seconds: float = 0.0
    outcome: str = "running"
    notes: list[str] = dataclasses.field(default_factory=list)  # what was done, in order
    started: float = dataclasses.field(default_factory=time.monotonic, repr=False)

    def finish(self, outcome: str) -> None:
        self.seconds = round(time.monotonic() - self.started, 1)
        self.outcome = outcome


def table(rows: list[Figures]) -> list[str]:
    """The rows, and their total, as lines of text with aligned columns."""
    headers = ["scenario", *(title for _, title in COLUMNS), "outcome"]
    body = [
        [row.scenario, *(_cell(getattr(row, name)) for name, _ in COLUMNS), row.outcome]
        for row in rows
    ]
    if len(rows) > 1:
        totals = [sum(getattr(row, name) for row in rows) for name, _ in COLUMNS]
        body.append(["total", *(_cell(value) for value in totals), ""])
    widths = [max(len(line[i]) for line in [headers, *body]) for i in range(len(headers))]

    def render(cells: list[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        )

    rule = "-" * len(render(headers))
    lines = [render(headers), rule, *(render(line) for line in body[: len(rows)])]
    if len(rows) > 1:
        lines += [rule, render(body[-1])]
    return lines


def _cell(value: float) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)
