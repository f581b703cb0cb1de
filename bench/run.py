"""`make bench`: run each part in its own process, print one table, write bench/results.json.

Each part is a module printing one JSON object (name -> {value, unit, anchor_value, ratio}) on
its last line. Parts run in separate processes because the relay and end-to-end parts run under
eventlet's monkey patching, which would change what the append and replay parts measure.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

PARTS = ("bench.append", "bench.replay", "bench.relay", "bench.e2e")
GOALS = {
    "append_sqlite_1": "ratio >= 1.5",
    "append_sqlite_100": "ratio >= 1.5",
    "append_postgres_1": "ratio >= 1.5",
    "append_postgres_100": "ratio >= 1.5",
    "replay_sqlite": "ratio >= 0.5, value >= 100000",
    "replay_postgres": "ratio >= 0.5",
    "relay": "ratio >= 0.8",
    "e2e_p50_ms": "value < 20",
    "e2e_p99_ms": "value < 100",
}
OUT = Path(__file__).resolve().parent / "results.json"


def main() -> int:
    console = Console(width=max(Console().width, 110))
    results: dict[str, dict] = {}
    failed = []
    for part in PARTS:
        console.print(f"[bold]{part}[/bold] …")
        done = subprocess.run([sys.executable, "-m", part], capture_output=True, text=True)
        if done.returncode != 0:
            failed.append(part)
            console.print(f"[red]{part} failed[/red]\n{done.stderr[-3000:]}")
            continue
        results.update(json.loads(done.stdout.strip().splitlines()[-1]))
    table = Table(title=f"lavoro bench ({platform.node()}, {platform.python_version()})")
    for column in ("figure", "value", "unit", "anchor", "ratio", "goal"):
        table.add_column(
            column, justify="right" if column in ("value", "anchor", "ratio") else "left"
        )
    for name, fig in results.items():
        table.add_row(
            name,
            f"{fig['value']:,.2f}",
            fig["unit"],
            "" if fig["anchor_value"] is None else f"{fig['anchor_value']:,.2f}",
            "" if fig["ratio"] is None else f"{fig['ratio']:.2f}",
            GOALS.get(name, ""),
        )
    console.print(table)
    OUT.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    console.print(
        f"written {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
