"""`lavoro demo` and `lavoro ledger progress`, in parts (the whole demo on the whole system is
tests/e2e/test_demo.py).

- The demo's data: its two calls' rankings award exactly the seed's grants, plus one award the
  labour-policies line has no room for (the calls' demo data and the ledger's seed are kept by
  two services that do not import each other: this is where they are held equal); with the
  offices' documents the books add up to the published figures; the ledger's steps come first;
  every command has a key of its own, the same on any day; each call is drafted with a 30-day
  window from the day of the run and closed early, with a reason, once its applications are in
  (no demo clock: `lavoro run` has no `--demo`).
- Against a ledger running on the real broker: `lavoro ledger progress` as a table, as JSON and as
  of a day; the demo's ledger steps twice append nothing the second time and refuse a database
  with other books; `lavoro demo` refuses, in one line, to start without the services.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from services.calls import demo as calls_demo
from services.calls.demo import data as demo_data
from services.calls.domain import ranking
from services.ledger import demo as ledger_demo
from services.ledger import events as schemas
from services.ledger import readmodels
from services.ledger.service import LedgerService
from shared import demo, services
from shared.cli import app
from shared.client import Api
from shared.clock import UTC, FixedClock
from shared.dependencies import EventStore
from shared.observability import fetch_health
from shared.web import bound_port
from tests.helpers import wait_for
from tests.integration.test_cli_ops import json_out
from tests.integration.test_runner import free_port
from tests.kit.http import AUDITOR, OPERATOR
from tests.service.ledger.builders import record_seed

pytestmark = pytest.mark.integration
runner = CliRunner()
RECORDED = dt.datetime(2024, 6, 3, 9, 0, tzinfo=UTC)  # the ledger's clock in these tests
LINE = "labour_policies"


def d(text: str) -> Decimal:
    return Decimal(text)


def one_line_error(result) -> str:
    """The one line on stderr (stdout has the log lines of the ledger running in this process)."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- the data ---------------------------------------------------------------------------------


def awards_of(call: demo_data.DemoCall) -> list[Decimal]:
    """What the calls service's ranking awards, in ranking order (services/calls/domain/ranking.py,
    the bonus as services/calls/domain/call.py counts it)."""
    criteria = [ranking.Criterion(*c) for c in call.criteria]
    candidates = []
    for seq, app_ in enumerate(call.applicants, start=1):
        if app_.scores is None:
            continue
        applicant = app_.applicant
        holder = applicant["person"] if applicant["kind"] == "person" else applicant["organisation"]
        bonus = sum(call.bonuses.get(p, 0) for p in set(holder.get("priorities", ())))
        candidates.append(
            ranking.Candidate(
                str(seq),
                seq,
                str(seq),
                app_.scores,
                bonus,
                d(app_.requested),
                d(app_.eligible_cost),
            )
        )
    ranked = ranking.rank(candidates, criteria, call.tie_break)
    pool = {c.application_id: c for c in candidates}
    allocations = ranking.allocate(
        ranked,
        pool,
        available=d(call.funding.budget),
        cap=d(call.award_cap),
        max_share=d(call.max_share),
    )
    return [a.amount for a in allocations]


def grants_of(call: demo_data.DemoCall) -> ledger_demo.CallGrants:
    """The ledger seed's grants of the call."""
    return next(g for g in ledger_demo.CALLS if g.reference == call.reference)


def test_the_calls_award_exactly_the_seeds_grants_and_one_the_line_has_no_room_for():
    assert [c.reference for c in demo_data.DEMO_CALLS] == [g.reference for g in ledger_demo.CALLS]
    assert demo_data.PROJECT_CUP == ledger_demo.CUP
    for call in demo_data.DEMO_CALLS:
        grants, funding = grants_of(call), call.funding
        expected = [d(a) for a in (*grants.awards, *grants.over_room)]
        assert awards_of(call) == expected, call.reference
        assert (funding.kind, d(funding.budget)) == (grants.kind, grants.budget)
        assert (funding.confirmed, funding.suspended) == (len(grants.awards), len(grants.over_room))
        assert funding.advances == grants.advances
        assert any(a.scores is None for a in call.applicants)  # one found inadmissible
        assert any(a.sessions for a in call.applicants)  # co-design
    assert {a.applicant["kind"] for a in demo_data.SELF_EMPLOYMENT.applicants} == {"person"}
    kinds = {a.applicant["kind"] for a in demo_data.SOCIAL_INNOVATION.applicants}
    assert kinds == {"third_sector_body", "informal_group"}

    # The line's room when the social innovation call's awards arrive: nine of its ten awards.
    programmed = {i["budget_line"]: d(i["amount"]) for i in ledger_demo.PROJECT["budget_lines"]}
    offices = sum(d(c.amount) for c in ledger_demo.OFFICE_COMMITMENTS if c.budget_line == LINE)
    room = programmed[LINE] - offices - sum(awards_of(demo_data.SELF_EMPLOYMENT))
    social = awards_of(demo_data.SOCIAL_INNOVATION)
    assert len(set(social)) == 1  # equal awards: whichever arrives last, the same amount is left
    assert room == sum(social[:-1]) and room < sum(social)


def test_with_the_offices_documents_the_demo_ends_on_the_published_figures():
    committed: dict[str, Decimal] = defaultdict(Decimal)
    for commitment in ledger_demo.OFFICE_COMMITMENTS:
        assert commitment.kind != "grant"  # grants come from the calls
        committed[commitment.budget_line] += d(commitment.amount)
    for call in demo_data.DEMO_CALLS:
        committed[LINE] += sum(awards_of(call)[: call.funding.confirmed])
    programmed = {i["budget_line"]: d(i["amount"]) for i in ledger_demo.PROJECT["budget_lines"]}
    assert dict(committed) == programmed
    office_paid = sum(d(p.amount) for c in ledger_demo.OFFICE_COMMITMENTS for p in c.payments)
    advances = sum(d(a) for call in demo_data.DEMO_CALLS for a in call.funding.advances)
    assert office_paid + advances == ledger_demo.EXPECTED["disbursed"] == d("605305.62")
    # the ledger-only rendition of the same books (services/ledger/demo.py, requests())
    expected = ledger_demo.EXPECTED["legally_binding"]
    assert sum(d(c.amount) for c in ledger_demo.COMMITMENTS) == expected


def test_the_ledgers_steps_come_first_then_the_calls_and_the_ledger_reports_its_figures():
    found = demo.contributions()
    assert list(found) == ["ledger", "calls"]  # calls runs after the ledger, its books first
    assert found["calls"].after == ("ledger",)
    assert found["ledger"].outcome_label == "ledger: the four figures"
    steps = demo.script(dt.date(2026, 11, 26), found)
    services_in_order = [s.label.split(":")[0] for s in steps]
    first_call = services_in_order.index("calls")
    assert set(services_in_order[:first_call]) == {"ledger"}
    assert len(ledger_demo.ledger_steps()) == first_call


def test_every_command_has_a_key_of_its_own_the_same_on_any_day():
    today = dt.date(2026, 11, 26)
    found = demo.contributions()
    steps = demo.script(today, found)
    commands = [s for s in steps if isinstance(s, demo.Command)]
    keys = [c.key for c in commands]
    assert len(keys) == len(set(keys)) > 100
    for key in keys:
        assert len(key) <= 200 and key.isascii() and key.isprintable() and " " not in key
    later = demo.script(dt.date(2027, 2, 1), found)
    assert [c.key for c in later if isinstance(c, demo.Command)] == keys
    claimed_later = calls_demo.script(dt.date(2027, 2, 1), dt.date(2027, 2, 3))
    calls_keys = [c.key for c in claimed_later if isinstance(c, demo.Command)]
    assert calls_keys == [c.key for c in commands if c.service == "calls"]
    assert sum(isinstance(s, calls_demo.AwaitAwards) for s in steps) == 2


def test_each_call_opens_today_for_30_days_and_closes_early_after_its_applications():
    today = dt.date(2026, 11, 26)
    steps = demo.script(today, demo.contributions())
    labels = [s.label for s in steps]
    drafts = [s for s in steps if isinstance(s, demo.Command) and s.path == "/calls"]
    assert [(d.body["opens_on"], d.body["closes_on"]) for d in drafts] == [
        ("2026-11-26", "2026-12-25")
    ] * 2
    for call in demo_data.DEMO_CALLS:
        ref = call.reference
        close = next(s for s in steps if s.label == f"calls: close {ref} early")
        reason = calls_demo.CLOSE_REASON
        assert close.body == {"reason": reason} and 0 < len(close.body["reason"]) <= 500
        assert close.key == f"lavoro-demo/v1/calls/{ref}/close"
        at = labels.index(close.label)
        submitted = [i for i, label in enumerate(labels) if label.startswith(f"calls: {ref} ")
                     and label.endswith(" submitted")]  # fmt: skip
        assert len(submitted) == len(call.applicants) and max(submitted) < at
        assert at < labels.index(f"calls: {ref} evaluation completed")
        # A 409 on the close (closed by an earlier run): done when the call is past published.
        assert close.check is not None and close.check.same == {"status": calls_demo.CLOSED}
        assert all(demo.same(state, calls_demo.CLOSED) for state in calls_demo.CLOSED)
        assert not demo.same("published", calls_demo.CLOSED)
    assert not any("clock" in label for label in labels)


def test_a_figure_off_by_a_cent_is_named_with_what_was_expected():
    figures = ledger_demo.FIGURES
    progress = {"total": {name: f"{ledger_demo.EXPECTED[name]:.2f}" for name in figures}}
    assert ledger_demo.mismatches(progress) == {}
    progress["total"]["disbursed"] = "605305.61"
    found = ledger_demo.mismatches(progress)
    assert found == {"disbursed": (d("605305.61"), d("605305.62"))}
    assert ledger_demo.mismatch_line(found) == (
        "the ledger's figures differ from the seed's: disbursed 605,305.61 (expected 605,305.62)"
    )


def test_lavoro_run_has_no_demo_clock_any_more():
    helped = runner.invoke(app, ["run", "--help"])
    assert helped.exit_code == 0 and "--demo" not in helped.output
    assert services.REGISTRY["calls"].target == "services.calls.service:CallsService"
    assert not hasattr(demo, "ShiftedClock") and not hasattr(demo, "DemoCalls")


# -- against a running ledger -------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path, harness):
    """A ledger on the real broker (its relay leads, so /health is 200), on a clock fixed at
    RECORDED; yields (client, its log, the CLI's environment)."""
    store = EventStore(
        projections=[readmodels.projection],
        upcasters=schemas.upcasters,
        clock=FixedClock(RECORDED),
    )
    cls = type("DemoTestLedger", (LedgerService,), {"store": store})
    db = {"DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    ledger = harness.start(cls, db)
    port = bound_port(ledger.container)
    wait_for(lambda: fetch_health(f"127.0.0.1:{port}")[0] == "up", 20, "the ledger's health")
    env = {"LEDGER_HTTP": f"127.0.0.1:{port}", "LAVORO_VAR": str(tmp_path)}
    return ledger.client, ledger.log, env


def test_ledger_progress_as_a_table_as_json_and_as_of_a_day(ledger):
    client, _log, env = ledger
    record_seed(client)
    table = runner.invoke(app, ["ledger", "progress", "--token", AUDITOR], env=env)
    assert table.exit_code == 0, table.output
    total = next(line for line in table.stdout.splitlines() if line.startswith("│ total"))
    assert total.split("│")[2:6] == [
        " 4,000,000.00 ",
        " 4,000,000.00 ",
        "    4,000,000.00 ",
        " 605,305.62 ",
    ]
    assert "labour_policies" in table.output and "15.1% of programmed" in table.output

    as_json = runner.invoke(app, ["ledger", "progress", "--json", "--token", OPERATOR], env=env)
    assert json_out(as_json) == client.get(f"/projects/{ledger_demo.CUP}/progress").json()

    # The books at the end of a day, as the log had them: nothing before the clock's day.
    day = ["ledger", "progress", "--json", "--token", AUDITOR, "--as-of"]
    on = json_out(runner.invoke(app, [*day, "2024-06-03"], env=env))
    before = json_out(runner.invoke(app, [*day, "2024-06-02"], env=env))
    assert on["as_of"] == "2024-06-03" and on["total"]["disbursed"] == "605305.62"
    assert before["total"]["programmed"] == "0.00"

    bad = runner.invoke(app, [*day, "3 June"], env=env)
    assert bad.exit_code == 2 and "--as-of" in bad.output
    # A day the ledger refuses (outside the plausible range): its 422, in one line, exit 1.
    far = one_line_error(runner.invoke(app, [*day, "9999-12-31"], env=env))
    assert "answered 422: invalid input: as_of: Outside the plausible range" in far


def test_ledger_progress_errors_are_one_line(ledger, tmp_path):
    _client, _log, env = ledger
    unknown = runner.invoke(
        app, ["ledger", "progress", "--cup", "X00000000000000", "--token", AUDITOR], env=env
    )
    assert "answered 404: no project with CUP X00000000000000" in one_line_error(unknown)
    refused = runner.invoke(app, ["ledger", "progress", "--token", "not-a-token"], env=env)
    assert "answered 401" in one_line_error(refused)
    no_token = runner.invoke(app, ["ledger", "progress"], env=env)
    assert f"no token: `lavoro run` writes {tmp_path / 'auditor.token'}" in one_line_error(no_token)
    closed = free_port()
    down = runner.invoke(
        app,
        ["ledger", "progress", "--token", AUDITOR],
        env={**env, "LEDGER_HTTP": f"127.0.0.1:{closed}"},
    )
    assert one_line_error(down).startswith(
        f"error: ledger does not answer at http://127.0.0.1:{closed}"
    )


def test_the_demo_starts_only_with_both_services_up(ledger):
    _client, log, env = ledger
    closed = free_port()
    down = runner.invoke(
        app, ["demo", "--token", OPERATOR], env={**env, "CALLS_HTTP": f"127.0.0.1:{closed}"}
    )
    assert f"calls does not answer at http://127.0.0.1:{closed}" in one_line_error(down)
    assert "start lavoro with `lavoro run`" in down.output
    assert log.head()[0] == 0  # it asked before it did anything


def test_the_demos_ledger_steps_twice_append_nothing_the_second_time(ledger):
    client, log, _env = ledger
    books = Api("ledger", client.base, OPERATOR)
    run = demo.Demo({"ledger": books, "calls": Api("calls", "http://127.0.0.1:1", OPERATOR)})
    steps = ledger_demo.ledger_steps()
    for step in steps:
        run.do(step)
    head = log.head()
    progress = client.get(f"/projects/{ledger_demo.CUP}/progress").json()["total"]
    grants = sum(d(a) for call in ledger_demo.CALLS for a in call.awards)
    assert d(progress["legally_binding"]) == ledger_demo.EXPECTED["legally_binding"] - grants
    for step in steps:
        run.do(step)
    assert log.head() == head
    assert books.sent == 2 * len(steps)


def test_the_same_books_recorded_by_hand_are_done_and_other_books_are_refused(ledger):
    client, log, _env = ledger
    for method, path, body in ledger_demo.requests(ledger_demo.OFFICE_COMMITMENTS):
        client.ok(method, path, body)  # keys of its own, not the demo's
    head = log.head()
    run = demo.Demo({"ledger": Api("ledger", client.base, OPERATOR)})
    for step in ledger_demo.ledger_steps():
        run.do(step)
    assert log.head() == head

    # A payment of the same claim, other figures: the ledger answers 409 and the demo says so.
    step = next(s for s in ledger_demo.ledger_steps() if s.label.startswith("ledger: pay"))
    assert step.check is not None
    asked = {**step.check.same, "amount": "1.00"}
    other = demo.Command(step.label, step.service, step.path, {**step.body, "amount": "1.00"},
                         step.key + "/other", check=dataclasses.replace(step.check, same=asked))  # fmt: skip
    with pytest.raises(demo.DemoError, match="answered 409.*differs from the demo's"):
        run.do(other)
