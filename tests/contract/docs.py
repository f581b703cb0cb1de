"""Reading docs/events.md as the contract: the fields each flow table and each service section
names for an event type."""

from __future__ import annotations

import re
from pathlib import Path

EVENTS_MD = Path(__file__).resolve().parents[2] / "docs" / "events.md"
_NOTE = re.compile(r"\([^)]*\)")  # "(= `grant-<award_id>`)", "(`advance` \| `interim`)" ...
_VALUE = re.compile(r"=\s*`[^`]*`")  # "`kind` = `grant`"
_NAME = re.compile(r"`([a-z_][a-z0-9_]*)`")


def text() -> str:
    return EVENTS_MD.read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of `## <title>` up to the next `## `."""
    body = text()
    start = body.index(f"\n## {title}\n")
    end = body.find("\n## ", start + 1)
    return body[start : end if end != -1 else None]


def field_names(cell: str) -> list[str]:
    return _NAME.findall(_VALUE.sub("", _NOTE.sub("", cell)))


def rows(part: str) -> list[list[str]]:
    """The cells of every table row in `part` (header and rule rows left out)."""
    found = []
    for line in part.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        found.append(cells)
    return found


def flow_fields() -> dict[str, list[str]]:
    """type -> data fields, from the F1/F2/F3 tables (`| \\`type\\` v1 | stream | data |`)."""
    flows = section("Flows between calls and ledger (F1, F2, F3)")
    out = {}
    for cells in rows(flows):
        type_ = _NAME.findall(cells[0])[0]
        out[type_] = field_names(cells[2])
    return out


def calls_published() -> dict[str, dict[str, object]]:
    """type -> {version, stream, data, public} from the `## calls` publishing table."""
    out: dict[str, dict[str, object]] = {}
    for cells in rows(section("calls")):
        if len(cells) != 5:
            continue
        type_ = _NAME.findall(cells[0])[0]
        public = cells[4]
        out[type_] = {
            "version": int(cells[1]),
            "stream": cells[2].strip("`"),
            "data": field_names(cells[3]),
            "public": None
            if public == "—"
            else ("all" if public == "all" else field_names(public)),
        }
    return out


def calls_consumed() -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for cells in rows(section("calls")):
        if len(cells) != 4:
            continue
        type_ = _NAME.findall(cells[0])[0]
        out[type_] = {"version": int(cells[1]), "requires": field_names(cells[2])}
    return out
