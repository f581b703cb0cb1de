"""docs/events.md holds the ledger to its word: the members and streams of every event in the
F1/F2 tables and the `## ledger` section are exactly those of the schemas and the domain, and the
calls events it consumes are exactly what its consumer schemas read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.ledger import domain
from services.ledger import events as schemas

DOC = Path(__file__).resolve().parents[3] / "docs" / "events.md"
_ROW = re.compile(
    r"^\| `(?P<type>[a-z_]+)` v1 \| `(?P<stream>[^`]+)` \| (?P<data>.*?) \|(?: \w+ \|)?$"
)


def _members(cell: str) -> set[str]:
    """The member names of a data cell: backticked names, leaving out what parentheses and
    `= value` say about them."""
    cell = re.sub(r"\([^)]*\)", "", cell)
    cell = re.sub(r"= `[^`]*`", "", cell)
    return set(re.findall(r"`([a-z_]+)`", cell))


def _rows(section_start: str, section_end: str | None) -> dict[str, tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(section_start)
    end = text.index(section_end, start) if section_end else len(text)
    rows = {}
    for line in text[start:end].splitlines():
        match = _ROW.match(line)
        if match:
            rows[match["type"]] = (match["stream"], match["data"])
    return rows


FLOWS = _rows("## Flows between calls and ledger", "## Service contracts")
LEDGER = _rows("## ledger", None)
STREAMS = {
    "project-<cup>": domain.project_stream("<cup>"),
    "commitment-<commitment_id>": domain.commitment_stream("<commitment_id>"),
    "commitment-grant-<award_id>": domain.commitment_stream(
        domain.grant_commitment_id("<award_id>")
    ),
}


def test_the_ledger_section_lists_every_event_type_of_the_ledger():
    assert set(LEDGER) == set(schemas.EVENTS)


@pytest.mark.parametrize("type_", sorted(schemas.EVENTS))
def test_each_event_has_the_documented_members_and_stream(type_):
    stream, data = LEDGER[type_]
    if data.startswith("as in F"):
        stream_in_flow, data = FLOWS[type_]
        assert stream_in_flow in STREAMS
    _version, schema = schemas.EVENTS[type_]
    assert _members(data) == set(schema().fields), type_
    assert STREAMS[stream] == stream


@pytest.mark.parametrize(
    ("type_", "schema"),
    [("grant_awarded", schemas.GrantAwardedV1), ("tranche_requested", schemas.TrancheRequestedV1)],
)
def test_the_consumed_calls_events_are_read_as_documented(type_, schema):
    stream, data = FLOWS[type_]
    assert stream == "award-<award_id>"
    assert _members(data) == set(schema().fields)
