"""Cooperative I/O under eventlet: psycopg2 waits through the hub instead of blocking it."""

from __future__ import annotations


def eventlet_patched() -> bool:
    try:
        import eventlet.patcher
    except ImportError:
        return False
    return bool(eventlet.patcher.is_monkey_patched("socket"))


def patch_psycopg() -> None:
    """Make psycopg2 yield to other greenlets while it waits on PostgreSQL (a held row lock, a
    slow query); without it one waiting worker freezes the whole service process."""
    if eventlet_patched():
        from psycogreen.eventlet import patch_psycopg as _patch

        _patch()
