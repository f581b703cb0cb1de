import sqlalchemy as sa

from shared.aggregates import load
from shared.records import Aggregate, NewEvent


def _evolve(state, event):
    return {"total": state["total"] + event.data["n"], "seen": state["seen"] + 1}


counter = Aggregate("counter", lambda: {"total": 0, "seen": 0}, _evolve)
snapshotted = Aggregate(
    "counter",
    lambda: {"total": 0, "seen": 0},
    _evolve,
    snapshot_every=10,
    to_json=dict,
    from_json=dict,
)


def test_load_folds_the_stream_and_returns_its_version(log):
    log.append("c-1", 0, [NewEvent("added", {"n": n}) for n in (1, 2, 3)])
    loaded = load(log, counter, "c-1")
    assert (loaded.state, loaded.version) == ({"total": 6, "seen": 3}, 3)
    assert load(log, counter, "c-none").version == 0


def test_snapshots_give_the_same_state_and_skip_the_folded_prefix(log, engine):
    log.append("c-1", 0, [NewEvent("added", {"n": n}) for n in range(25)])
    first = load(log, snapshotted, "c-1")
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT version FROM snapshots WHERE stream = 'c-1'")).scalar_one()
            == 25
        )
    log.append("c-1", 25, [NewEvent("added", {"n": 100})])
    again = load(log, snapshotted, "c-1")
    plain = load(log, counter, "c-1")
    assert again == plain and again.state["seen"] == 26 and first.state["total"] == sum(range(25))


def test_a_snapshot_with_another_tag_is_ignored(log):
    log.append("c-1", 0, [NewEvent("added", {"n": 1})] * 12)
    load(log, snapshotted, "c-1")
    changed = Aggregate(
        "counter",
        lambda: {"total": 0, "seen": 0},
        lambda s, e: {"total": s["total"] + 10 * e.data["n"], "seen": 0},
        snapshot_every=10,
        to_json=dict,
        from_json=dict,
        snapshot_tag="2",
    )
    assert load(log, changed, "c-1").state["total"] == 120
