"""Dead letters on the real RabbitMQ, consumer database on SQLite and PostgreSQL: an event that keeps
failing is parked (table and `<service>.dlq`) with the later events of its stream behind it while
other streams go on; an operator's retry replays the stream in order, a skip gives one event up.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from shared import dlq
from shared import tables as t
from shared.consumer import consumer_stats
from shared.dependencies import log_for
from shared.errors import NotFound
from tests.helpers import wait_for
from tests.integration.test_consumer import (
    SOURCE,
    Behaviour,
    a_body,
    consumer_service,
    engine_of,
    inbox_ids,
)
from tests.kit.service import database_of


def container_log_events(container):
    return list(log_for(container).read_all())


def letters(container) -> list[tuple[str, str, str, int]]:
    """(event id, status, error's first line, attempts) of every dead letter, oldest first."""
    with engine_of(container).connect() as conn:
        rows = conn.execute(sa.select(t.dead_letters).order_by(t.dead_letters.c.id)).all()
    return [(row.event_id, row.status, row.error.split("\n")[0], row.attempts) for row in rows]


@pytest.fixture
def parked(harness, store_url):
    """A running consumer whose handler keeps failing on the 2nd event of stream `call-1`; the 3rd
    and 4th of that stream are parked behind it, stream `call-2` is handled meanwhile."""
    s1, s2, s3, s4 = (a_body("call-1", version=v) for v in range(1, 5))
    others = [a_body("call-2", version=v) for v in range(1, 4)]
    behaviour = Behaviour(failures={s2["id"]: float("inf")})
    container = harness.start(consumer_service(behaviour), database_of(store_url)).container
    harness.publish(SOURCE, s1)
    harness.publish(SOURCE, s2, headers={"x-trace": "trace-42"})
    harness.publish(SOURCE, others[0], s3, others[1], s4, others[2])
    stats = consumer_stats(container)
    wait_for(
        lambda: stats["parked"] == 1 and stats["parked_behind"] == 2 and stats["handled"] == 4,
        message="one parked, two behind it, four handled",
    )
    return container, behaviour, (s1, s2, s3, s4), others


def test_an_event_that_keeps_failing_is_parked_and_holds_its_stream(harness, parked):
    container, behaviour, (s1, s2, s3, s4), others = parked
    assert letters(container) == [
        (s2["id"], "parked", f"RuntimeError: boom on {s2['id']}", 5),
        (s3["id"], "parked", f"parked behind {s2['id']}", 0),
        (s4["id"], "parked", f"parked behind {s2['id']}", 0),
    ]
    assert [e.id for e in behaviour.calls if e.stream == "call-1"] == [s1["id"]] + [s2["id"]] * 5
    assert inbox_ids(container) == {s1["id"], *(o["id"] for o in others)}
    # Nothing of the failed attempts was committed: only s1's and call-2's "seen" events.
    assert len(container_log_events(container)) == 4

    first, *behind = harness.messages(harness.dlq("consumer"), 3)
    assert first.payload == s2  # the original body, untouched
    assert first.properties["message_id"] == s2["id"]
    assert first.headers["x-trace"] == "trace-42"  # the original headers, kept
    assert first.headers["x-lavoro-error"].startswith(f"RuntimeError: boom on {s2['id']}")
    assert first.headers["x-lavoro-source"] == harness.name(SOURCE)
    assert first.headers["x-lavoro-attempts"] == 5
    assert [m.payload["id"] for m in behind] == [s3["id"], s4["id"]]
    assert all(m.headers["x-lavoro-error"] == f"parked behind {s2['id']}" for m in behind)

    listed = dlq.list_parked(engine_of(container), harness.name(SOURCE))
    assert [(d.event_id, d.stream, d.position) for d in listed] == [
        (s["id"], "call-1", s["position"]) for s in (s2, s3, s4)
    ]
    assert json.loads(listed[0].body) == s2 and listed[0].headers["x-trace"] == "trace-42"
    assert dlq.list_parked(engine_of(container), "some-other-source") == []

    # The same message delivered again is not parked twice.
    harness.publish(SOURCE, s2)
    stats = consumer_stats(container)
    wait_for(lambda: stats["duplicate"] == 1, message="the redelivery")
    assert len(letters(container)) == 3


def test_retry_replays_the_parked_stream_in_order(harness, parked):
    container, behaviour, (s1, s2, s3, s4), _ = parked
    behaviour.failures.clear()
    released = dlq.retry(engine_of(container), harness.name(SOURCE), "call-1")
    assert [d.event_id for d in released] == [s2["id"], s3["id"], s4["id"]]
    # A newer event of the stream arriving now still waits for the replay.
    s5 = a_body("call-1", version=5)
    harness.publish(SOURCE, s5)
    stats = consumer_stats(container)
    wait_for(lambda: stats["replayed"] == 3 and stats["handled"] == 8, message="replay and s5")
    handled_order = [e.id for e in behaviour.calls if e.stream == "call-1"]
    assert handled_order[-4:] == [s2["id"], s3["id"], s4["id"], s5["id"]]
    assert {s["id"] for s in (s1, s2, s3, s4, s5)} <= inbox_ids(container)
    assert [status for _, status, _, _ in letters(container)] == ["retried"] * 3
    assert dlq.list_parked(engine_of(container)) == []
    seen = [e.data["id"] for e in container_log_events(container) if e.stream == "seen-call-1"]
    assert seen == [s["id"] for s in (s1, s2, s3, s4, s5)]


def test_a_released_event_that_fails_again_is_parked_again_with_the_rest(harness, parked):
    container, _, (_, s2, s3, s4), _ = parked
    dlq.retry(engine_of(container), harness.name(SOURCE), "call-1")  # still failing
    stats = consumer_stats(container)
    wait_for(lambda: stats["parked"] == 2, message="parked again")
    assert letters(container) == [
        (s2["id"], "parked", f"RuntimeError: boom on {s2['id']}", 10),
        (s3["id"], "parked", f"parked behind {s2['id']}", 0),
        (s4["id"], "parked", f"parked behind {s2['id']}", 0),
    ]
    assert stats["replayed"] == 0


def test_skip_gives_one_event_up_and_releases_the_stream(harness, parked):
    container, behaviour, (s1, s2, s3, s4), _ = parked
    with pytest.raises(NotFound):
        dlq.skip(engine_of(container), harness.name(SOURCE), "call-1", event_id=s1["id"])
    with pytest.raises(NotFound):
        dlq.skip(engine_of(container), harness.name(SOURCE), "no-such-stream")
    resolution = dlq.skip(engine_of(container), harness.name(SOURCE), "call-1")
    assert [d.event_id for d in resolution.skipped] == [s2["id"]]
    assert [d.event_id for d in resolution.released] == [s3["id"], s4["id"]]
    stats = consumer_stats(container)
    wait_for(lambda: stats["replayed"] == 2, message="the rest replayed")
    assert [e.id for e in behaviour.calls if e.stream == "call-1"][-2:] == [s3["id"], s4["id"]]
    assert s2["id"] not in inbox_ids(container)
    assert [status for _, status, _, _ in letters(container)] == ["skipped", "retried", "retried"]
    # A skipped event that the broker delivers again stays skipped.
    harness.publish(SOURCE, s2)
    wait_for(lambda: stats["duplicate"] == 1, message="the redelivery")
    assert s2["id"] not in inbox_ids(container)
