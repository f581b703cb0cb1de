"""The demo runner (shared/demo.py) with services' contributions made up here, without HTTP: the
order of their steps, the progress labels, and how their outcomes are printed and merged."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from shared import demo, services


@dataclasses.dataclass(frozen=True)
class Noted:
    """A step that writes its label down, as a service's own step would keep what it did."""

    label: str

    def run(self, run: demo.Demo) -> None:
        run.note("done", self.label)


def steps_of(service: str, count: int = 2):
    return lambda today: [Noted(f"{service}: step {n} on {today}") for n in range(1, count + 1)]


def test_each_service_runs_after_those_it_names_otherwise_in_registry_order():
    found = {
        "placement": demo.Contribution(steps_of("placement"), after=("calls",)),
        "calls": demo.Contribution(steps_of("calls"), after=("ledger", "charters")),
        "safeguarding": demo.Contribution(steps_of("safeguarding")),
        "ledger": demo.Contribution(steps_of("ledger")),
    }  # charters does not contribute: calls does not wait for it
    assert list(demo.order(found)) == ["safeguarding", "ledger", "calls", "placement"]
    loop = {
        "a": demo.Contribution(steps_of("a"), after=("b",)),
        "b": demo.Contribution(steps_of("b"), after=("a",)),
    }
    with pytest.raises(demo.DemoError, match="the demo steps of a, b wait for each other"):
        demo.order(loop)


def test_a_run_reports_every_step_then_each_outcome_and_ends_on_one_line():
    def books(run: demo.Demo) -> demo.Outcome:
        assert len(run.noted("done")) == 3  # every step ran before any outcome is read
        return demo.Outcome(
            json={"total": "4.00", "matches": False},
            show=["the books table"],
            verdict="total 4.00",
            problem="the total differs",
        )

    def calls(run: demo.Demo) -> demo.Outcome:
        return demo.Outcome(json={"calls": ["c1"]}, show=["c1: 2 awards"])

    found = demo.order(
        {
            "calls": demo.Contribution(steps_of("calls", 1), after=("ledger",), outcome=calls),
            "ledger": demo.Contribution(
                steps_of("ledger"), outcome=books, outcome_label="ledger: the figures"
            ),
        }
    )
    moment = dt.datetime(2026, 11, 26, 23, 30, tzinfo=dt.UTC)  # 27 November in Bologna
    run = demo.Demo({}, found, clock=lambda: moment)
    labels: list[str] = []
    result = run.run(labels.append)

    assert labels == [
        "ledger: step 1 on 2026-11-27",
        "ledger: step 2 on 2026-11-27",
        "calls: step 1 on 2026-11-27",
        "ledger: the figures",
    ]
    assert run.steps() == len(labels)
    assert result.problems == ["the total differs"]
    assert result.to_json() == {
        "total": "4.00",
        "matches": False,
        "calls": ["c1"],
        "commands": 0,
        "seconds": round(result.seconds, 2),
    }
    shown = result.shown()
    assert shown[:2] == ["the books table", "c1: 2 awards"]
    assert shown[2] == f"total 4.00, 0 commands sent in {result.seconds:.1f}s"


def test_keys_are_one_visible_word_and_amounts_compare_as_numbers():
    assert demo.key("ledger", "payment", "Det. 12 (2024)") == (
        "lavoro-demo/v1/ledger/payment/Det.-12-2024"
    )
    assert demo.same("8000.0", "8000.00") and demo.same("closed", ("open", "closed"))
    assert not demo.same("published", ("closed",))
    assert demo.euros("1234567.5") == "1,234,567.50"


def test_the_registry_names_each_services_demo_and_commands_as_modules():
    ledger, calls = services.REGISTRY["ledger"], services.REGISTRY["calls"]
    assert (ledger.demo, ledger.cli) == ("services.ledger.demo", "services.ledger.cli")
    assert (calls.demo, calls.cli) == ("services.calls.demo", None)
    assert isinstance(services.demo_of(ledger), demo.Contribution)
    assert services.cli_of(calls) is None
    assert services.demo_of(services.REGISTRY["placement"]) is None
    broken = services.ServiceSpec("x", "shared.demo:Demo", None, demo="shared.client")
    with pytest.raises(services.RegistryError, match="shared.client has no contribution"):
        services.demo_of(broken)
