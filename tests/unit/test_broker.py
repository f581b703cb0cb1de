"""shared.broker: which broker user may speak for a source, and how a refusal reads."""

from __future__ import annotations

import pytest

from shared.broker import SourceUsersError, broker_user, impostor, source_users


def test_source_users_come_from_the_config_else_the_environment():
    assert source_users({"LAVORO_SOURCE_USERS": {"calls": "calls"}}, env={}) == {"calls": "calls"}
    env = {"LAVORO_SOURCE_USERS": " calls=calls, ledger = ledger-user ,"}
    assert source_users({}, env=env) == {"calls": "calls", "ledger": "ledger-user"}
    assert source_users({}, env={}) == {}  # development: nothing to check against


@pytest.mark.parametrize(
    ("value", "complaint"),
    [("calls", "'calls' is not <source>=<user>"), ("calls=", "'calls' needs a broker user")],
)
def test_malformed_source_users_are_refused_naming_the_setting(value, complaint):
    with pytest.raises(SourceUsersError, match=complaint):
        source_users({}, env={"LAVORO_SOURCE_USERS": value})


def test_only_the_sources_own_user_speaks_for_it():
    assert impostor("calls", "calls", "calls") is None
    assert impostor("calls", None, "guest") is None  # not configured: accepted
    assert impostor("calls", "calls", "guest") == (
        "refused: published by broker user 'guest', not calls's 'calls'"
    )
    assert impostor("calls", "calls", None) == (
        "refused: published without a broker user, not by calls's 'calls'"
    )


def test_the_broker_user_is_the_uris():
    assert broker_user("amqp://calls:secret@rabbitmq:5672/lavoro") == "calls"
    assert broker_user("amqp://rabbitmq//") == "guest"
