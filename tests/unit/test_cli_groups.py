"""The `lavoro` command is built from the chassis's groups and each service's own (its registry
entry's `cli` module); a service whose module does not import costs only its own group."""

from __future__ import annotations

import dataclasses

import typer.main

from shared import services
from shared.cli import build


def names(app) -> list[str]:
    return list(typer.main.get_command(app).commands)


def test_the_chassis_groups_then_each_services_own():
    assert names(build()) == [
        *("run", "serve", "status", "demo"),
        *("audit", "events", "dlq", "projections", "tokens", "keys", "persons"),
        "ledger",  # services/ledger/cli.py, named by the registry
    ]


def test_a_service_cli_that_does_not_import_is_a_warning_not_a_broken_lavoro(monkeypatch, capsys):
    broken = dataclasses.replace(services.REGISTRY["ledger"], cli="services.ledger.no_such_cli")
    monkeypatch.setitem(services.REGISTRY, "ledger", broken)
    assert "ledger" not in names(build()) and "status" in names(build())
    warning = capsys.readouterr().err.splitlines()[0]
    assert warning == (
        "warning: `lavoro ledger` is unavailable: services.ledger.no_such_cli does not import: "
        "ModuleNotFoundError: No module named 'services.ledger.no_such_cli'"
    )
