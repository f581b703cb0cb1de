"""The leader lock (one active relay per service log), on SQLite and PostgreSQL alike."""

import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa

from shared.db import ROOT
from shared.leader import leader_lock
from tests.helpers import wait_for

HOLDER = """
import sys
from shared.db import make_engine
from shared.leader import leader_lock

lock = leader_lock(make_engine(sys.argv[1], schema=sys.argv[2] or None), sys.argv[3])
assert lock.try_acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_one_holder_at_a_time_per_name(engine, unique):
    first = leader_lock(engine, f"relay:{unique}")
    second = leader_lock(engine, f"relay:{unique}")
    other_role = leader_lock(engine, f"relay:{unique}-other")
    try:
        assert first.try_acquire()
        assert first.try_acquire()  # taking a lock it holds is a no-op, not a deadlock
        assert not second.try_acquire()
        assert first.held and first.still_held() and not second.held
        assert other_role.try_acquire()
        first.release()
        assert not first.held and not first.still_held()
        assert second.try_acquire()
    finally:
        for lock in (first, second, other_role):
            lock.release()


def test_a_waiter_takes_over_when_the_holder_releases_and_gives_up_when_stopped(engine, unique):
    holder = leader_lock(engine, f"relay:{unique}")
    waiter = leader_lock(engine, f"relay:{unique}")
    assert holder.try_acquire()
    stop = threading.Event()
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(waiter.acquire(stop, 0.01)))
    thread.start()
    stop.set()
    thread.join(5)
    assert outcome == [False] and not waiter.held

    outcome.clear()
    thread = threading.Thread(target=lambda: outcome.append(waiter.acquire(None, 0.01)))
    thread.start()
    holder.release()
    wait_for(lambda: outcome, 5, "the waiter to take the lock")
    assert outcome == [True] and waiter.held and not holder.try_acquire()
    waiter.release()


def test_the_lock_is_freed_when_the_holding_process_dies(store_url, engine, unique):
    url, schema = store_url
    name = f"relay:{unique}"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, schema or "", name],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lock = leader_lock(engine, name)
    try:
        assert child.stdout.readline().strip() == "held"
        assert not lock.try_acquire()
        child.kill()  # SIGKILL: no release, no goodbye to the server
        assert child.wait(10) == -9
        wait_for(lock.try_acquire, 10, "the dead holder's lock to be freed")
    finally:
        child.kill()
        lock.release()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_postgres_holder_learns_that_its_session_died(engine, unique):
    lock = leader_lock(engine, f"relay:{unique}")
    rival = leader_lock(engine, f"relay:{unique}")
    assert lock.try_acquire()
    pid = lock.backend_pid
    assert pid is not None
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    assert not lock.still_held() and not lock.held
    wait_for(rival.try_acquire, 5, "the lock of the dead session to be free")
    rival.release()
