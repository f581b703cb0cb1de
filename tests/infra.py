"""Where the tests' real servers are: testcontainers when a Docker engine answers, otherwise the
servers named by `AMQP_URI` / `DATABASE_URL` (by default the local RabbitMQ and PostgreSQL)."""

from __future__ import annotations

import atexit
import functools
import os

import sqlalchemy as sa

from shared.db import normalise_url

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@functools.cache
def _docker_answers() -> bool:
    if os.environ.get("LAVORO_TESTCONTAINERS", "auto") == "off":
        return False
    if "AMQP_URI" in os.environ and "DATABASE_URL" in os.environ:
        return False
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # no engine here: fall back to the running servers
        return False


@functools.cache
def postgres_url() -> str:
    if "DATABASE_URL" in os.environ or not _docker_answers():
        return os.environ.get("DATABASE_URL", DEFAULT_PG)
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:15", driver="psycopg2").start()
    atexit.register(container.stop)
    return container.get_connection_url()


@functools.cache
def amqp_uri() -> str:
    if "AMQP_URI" in os.environ or not _docker_answers():
        return os.environ.get("AMQP_URI", DEFAULT_AMQP)
    from testcontainers.rabbitmq import RabbitMqContainer

    container = RabbitMqContainer("rabbitmq:3.10-management").start()
    atexit.register(container.stop)
    params = container.get_connection_params()
    return f"amqp://guest:guest@{params.host}:{params.port}/"


def drop_schema(url: str, schema: str) -> None:
    engine = sa.create_engine(normalise_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()
