"""Loading an aggregate's state from its stream, with optional snapshots every N versions.

A service describes an aggregate once (`shared.records.Aggregate`: initial state, `evolve`, and
for snapshots a way to turn its state into JSON and back); `load` folds the stream, starting from
the newest snapshot when there is one, so a long stream loads fast. A snapshot is only a cache: it
carries the aggregate's `snapshot_tag`, and one taken with another tag (evolve changed) is ignored.
"""

from __future__ import annotations

import json
from typing import TypeVar

import sqlalchemy as sa

from shared import tables as t
from shared.canonical import canonical
from shared.db import write_transaction
from shared.eventlog import EventLog
from shared.records import Aggregate, Loaded

S = TypeVar("S")


def load(log: EventLog, aggregate: Aggregate[S], stream: str) -> Loaded[S]:
    """Fold `stream` into the aggregate's state; the version is what `append` expects next."""
    state, version = aggregate.initial(), 0
    snapshot = _read_snapshot(log, aggregate, stream) if aggregate.snapshot_every else None
    if snapshot is not None:
        state, version = snapshot
    events = log.read_stream(stream, after_version=version)
    for event in events:
        state = aggregate.evolve(state, event)
        version = event.version
    if aggregate.snapshot_every and events:
        last_snapshot = snapshot[1] if snapshot else 0
        if version // aggregate.snapshot_every > last_snapshot // aggregate.snapshot_every:
            _write_snapshot(log, aggregate, stream, state, version)
    return Loaded(state, version)


def _read_snapshot(log: EventLog, aggregate: Aggregate[S], stream: str) -> tuple[S, int] | None:
    assert aggregate.from_json is not None, "an aggregate with snapshots needs from_json"
    with log.engine.connect() as conn:
        row = conn.execute(
            sa.select(t.snapshots.c.version, t.snapshots.c.state).where(
                t.snapshots.c.stream == stream
            )
        ).first()
    if row is None:
        return None
    stored = json.loads(row.state)
    if stored.get("tag") != aggregate.snapshot_tag or stored.get("aggregate") != aggregate.name:
        return None
    return aggregate.from_json(stored["state"]), int(row.version)


def _write_snapshot(
    log: EventLog, aggregate: Aggregate[S], stream: str, state: S, version: int
) -> None:
    assert aggregate.to_json is not None, "an aggregate with snapshots needs to_json"
    body = canonical(
        {
            "aggregate": aggregate.name,
            "tag": aggregate.snapshot_tag,
            "state": aggregate.to_json(state),
        }
    )
    now = log.clock.now()
    # Snapshots live outside the log and may be replaced: newest wins, an older one never
    # overwrites a newer one (two workers may load the same stream at once).
    with write_transaction(log.engine) as conn:
        updated = conn.execute(
            t.snapshots.update()
            .where(t.snapshots.c.stream == stream, t.snapshots.c.version < version)
            .values(version=version, state=body, taken_at=now)
        ).rowcount
        if not updated:
            exists = conn.execute(
                sa.select(t.snapshots.c.stream).where(t.snapshots.c.stream == stream)
            ).first()
            if exists is None:
                conn.execute(
                    t.snapshots.insert().values(
                        stream=stream, version=version, state=body, taken_at=now
                    )
                )
