"""What every bench part shares: where the databases are, timing, and the JSON a part prints."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable

import sqlalchemy as sa

PG_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URI = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fresh_schema(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def drop_schema(schema: str) -> None:
    from shared.db import normalise_url

    engine = sa.create_engine(normalise_url(PG_URL))
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()


def emit(results: dict[str, dict[str, float | str | None]]) -> None:
    """A part prints one JSON object on its last line; bench.run collects them."""
    sys.stdout.write(json.dumps(results) + "\n")


def figure(value: float, unit: str, anchor: float | None) -> dict[str, float | str | None]:
    return {
        "value": round(value, 3),
        "unit": unit,
        "anchor_value": None if anchor is None else round(anchor, 3),
        "ratio": None if not anchor else round(value / anchor, 3),
    }
