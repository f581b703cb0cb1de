"""Root test configuration. eventlet must patch the standard library before anything else imports
sockets, or tests that touch the broker hang."""

import warnings

# Only eventlet's own notice that it is in maintenance mode; every other warning still shows.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import os  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

# Services that seal personal data refuse to start without a key-encryption key: the tests' own,
# as the environment would give it (tests about KEKs make and pass their own).
os.environ.setdefault("LAVORO_KEK", "5Z1v8y2R0wq7bN4kT6mH3pX9cL1fJ8dA0sE2uW7iY4o")

from shared.green import patch_psycopg  # noqa: E402

patch_psycopg()

from tests import infra  # noqa: E402


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    """(url, schema) for a fresh, isolated database: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'log.db'}", None
    else:
        url = infra.postgres_url()
        schema = "t_" + uuid.uuid4().hex[:16]
        yield url, schema
        infra.drop_schema(url, schema)


@pytest.fixture
def engine(store_url):
    from shared.db import make_engine, migrate

    url, schema = store_url
    eng = make_engine(url, schema=schema)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def log(engine):
    from shared.eventlog import EventLog

    return EventLog(engine)


@pytest.fixture
def amqp_uri():
    return infra.amqp_uri()


@pytest.fixture
def unique():
    """A short unique name for exchanges, queues and services of one test."""
    return "t" + uuid.uuid4().hex[:10]


def pytest_report_header(config):
    return f"lavoro test servers: AMQP={infra.amqp_uri()} PG={infra.postgres_url()} (docker: {os.environ.get('LAVORO_TESTCONTAINERS', 'auto')})"
