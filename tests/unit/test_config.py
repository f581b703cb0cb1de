"""Configuration (shared.config): environment first, defaults that work on one machine, and
`${ENV:default}` placeholders read the way `nameko run --config` reads them."""

from __future__ import annotations

import pytest
import yaml

from shared.config import (
    DEFAULT_AMQP_URI,
    HTTP_PORTS,
    ConfigError,
    http_address,
    load_yaml_config,
    log_format,
    max_workers,
    service_config,
)

ENV = (
    "AMQP_URI",
    "CALLS_DATABASE_URL",
    "CALLS_HTTP",
    "CALLS_MAX_WORKERS",
    "LAVORO_MAX_WORKERS",
    "LAVORO_TOKENS",
    "LAVORO_TOKENS_FILE",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "LAVORO_TEST_PORT",
    "LAVORO_TEST_NAME",
)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAVORO_VAR", str(tmp_path / "var"))
    return monkeypatch


def write(path, text):
    path.write_text(text)
    return path


def test_placeholders_take_the_default_or_the_environment(clean_env, tmp_path):
    config_file = write(
        tmp_path / "config.yaml",
        "AMQP_URI: ${AMQP_URI:amqp://guest:guest@localhost:5672/}\n"
        "port: ${LAVORO_TEST_PORT:8002}\n"
        "name: ${LAVORO_TEST_NAME}\n"
        "nested:\n  url: http://${LAVORO_TEST_NAME:host}:${LAVORO_TEST_PORT:80}/x\n"
        "plain: 3\n",
    )
    assert load_yaml_config(config_file) == {
        "AMQP_URI": "amqp://guest:guest@localhost:5672/",
        "port": 8002,  # read as YAML, as nameko does
        "name": None,
        "nested": {"url": "http://host:80/x"},
        "plain": 3,
    }
    clean_env.setenv("AMQP_URI", "amqp://u:p@rabbit:5672/")
    clean_env.setenv("LAVORO_TEST_PORT", "9000")
    clean_env.setenv("LAVORO_TEST_NAME", "calls")
    loaded = load_yaml_config(config_file)
    assert loaded["AMQP_URI"] == "amqp://u:p@rabbit:5672/"
    assert loaded["port"] == 9000
    assert loaded["nested"] == {"url": "http://calls:9000/x"}


def test_loading_a_config_leaves_pyyamls_safe_loader_alone(clean_env, tmp_path):
    load_yaml_config(write(tmp_path / "c.yaml", "a: ${LAVORO_TEST_PORT:1}\n"))
    assert yaml.safe_load("a: ${LAVORO_TEST_PORT:1}") == {"a": "${LAVORO_TEST_PORT:1}"}


@pytest.mark.parametrize(("text", "complaint"), [("- a\n- b\n", "mapping"), ("a: [\n", "c.yaml")])
def test_a_malformed_config_is_refused_naming_the_file(clean_env, tmp_path, text, complaint):
    with pytest.raises(ConfigError, match=complaint):
        load_yaml_config(write(tmp_path / "c.yaml", text))
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml_config(tmp_path / "absent.yaml")


def test_service_config_defaults(clean_env, tmp_path):
    config = service_config("calls", path=write(tmp_path / "empty.yaml", ""))
    assert config["AMQP_URI"] == DEFAULT_AMQP_URI == "amqp://guest:guest@localhost:5672/"
    # This machine only, by default: compose (deploy/) sets 0.0.0.0 where it is wanted.
    assert config["WEB_SERVER_ADDRESS"] == "127.0.0.1:8002"
    assert config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'var' / 'calls.db'}"
    assert config["max_workers"] == 10
    assert config["SERVICE_NAME"] == "calls"
    assert config["LOG_LEVEL"] == "INFO"
    assert config["LOG_FORMAT"] is None  # shared.logs chooses by the terminal
    assert "LAVORO_TOKENS" not in config and "LAVORO_TOKENS_FILE" not in config


def test_service_config_from_the_environment(clean_env, tmp_path):
    clean_env.setenv("AMQP_URI", "amqp://u:p@rabbit:5672/")
    clean_env.setenv("CALLS_DATABASE_URL", "postgresql://calls@db/calls")
    clean_env.setenv("CALLS_HTTP", "127.0.0.1:9102")
    clean_env.setenv("LAVORO_MAX_WORKERS", "4")
    clean_env.setenv("LAVORO_TOKENS_FILE", "/etc/lavoro/tokens.json")
    config = service_config("calls", path=write(tmp_path / "empty.yaml", ""))
    assert config["AMQP_URI"] == "amqp://u:p@rabbit:5672/"
    assert config["DATABASE_URL"] == "postgresql://calls@db/calls"
    assert config["WEB_SERVER_ADDRESS"] == "127.0.0.1:9102"
    assert config["max_workers"] == 4
    assert config["LAVORO_TOKENS_FILE"] == "/etc/lavoro/tokens.json"
    clean_env.setenv("CALLS_MAX_WORKERS", "2")  # the service's own setting wins
    assert max_workers("calls") == 2


def test_the_services_config_yaml_goes_on_top(clean_env, tmp_path):
    config_file = write(
        tmp_path / "config.yaml", "max_workers: ${CALLS_MAX_WORKERS:3}\nCALLS_RANK_LIMIT: 50\n"
    )
    config = service_config("calls", path=config_file)
    assert config["max_workers"] == 3
    assert config["CALLS_RANK_LIMIT"] == 50
    assert config["WEB_SERVER_ADDRESS"] == "127.0.0.1:8002"


def test_every_service_has_its_own_port_and_unknown_ones_must_say(clean_env):
    assert HTTP_PORTS == {
        "placement": 8001,
        "calls": 8002,
        "safeguarding": 8003,
        "charters": 8004,
        "ledger": 8005,
    }
    with pytest.raises(ConfigError, match="TESTSVC_HTTP"):
        http_address("testsvc")
    assert http_address("testsvc", env={"TESTSVC_HTTP": "0"}) == "0"


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("CALLS_HTTP", "localhost:http", "CALLS_HTTP"),
        ("CALLS_MAX_WORKERS", "many", "whole number"),
        ("CALLS_MAX_WORKERS", "0", "at least 1"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml': expected json or console"),
    ],
)
def test_malformed_settings_are_refused_naming_the_variable(clean_env, name, value, complaint):
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match=complaint):
        service_config("calls")


def test_log_format_is_json_or_console_or_left_to_the_terminal():
    assert log_format({}) is None and log_format({"LOG_FORMAT": " "}) is None
    assert log_format({"LOG_FORMAT": "json"}) == "json"
    assert log_format({"LOG_FORMAT": "Console"}) == "console"
    with pytest.raises(ConfigError) as refused:
        log_format({"LOG_FORMAT": "pretty"})
    assert str(refused.value) == "LOG_FORMAT='pretty': expected json or console"
