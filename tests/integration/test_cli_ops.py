"""The operator's commands, driven with typer's CliRunner against a real service database (SQLite
and PostgreSQL) and, for `status`, the probe service of test_runner.py running in this process."""

from __future__ import annotations

import json
import re
import shlex

import eventlet
import kombu
import pytest
import requests
import sqlalchemy as sa
import typer.main
from nameko.containers import ServiceContainer
from typer.testing import CliRunner

from shared.auth import Tokens
from shared.cli import app
from shared.clock import SystemClock
from shared.db import ROOT, disable_append_only, make_engine, migrate, write_transaction
from shared.dlq import DeadLetterOffice, Parcel
from shared.errors import Unauthorized
from shared.eventlog import EventLog
from shared.observability import read_figures
from shared.records import NewEvent
from shared.web import bound_port
from tests.helpers import wait_for
from tests.integration.test_runner import notes, notes_projection
from tests.kit.service import database_url

runner = CliRunner()
TOKEN = "cli-ops-operator"
PROBE = "tests.integration.test_runner:Probe"


def cli_env(name: str, url: str, port: int = 1, **more: str) -> dict[str, str]:
    return {
        "LAVORO_SERVICES": f"{name}={PROBE}",
        f"{name.upper()}_DATABASE_URL": url,
        f"{name.upper()}_HTTP": f"127.0.0.1:{port}",
        **more,
    }


def invoke(args: list[str], env: dict[str, str]):
    return runner.invoke(app, args, env=env)


def json_out(result):
    """The JSON document a command printed, among the lines a service in this process logged
    meanwhile (they go to the same captured stdout)."""
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line in ("[", "{", "[]", "{}"))
    end = next(i for i in range(start, len(lines)) if lines[i] in ("]", "}", "[]", "{}"))
    return json.loads("\n".join(lines[start : end + 1]))


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def running_probe(store_url, engine, unique, amqp_uri):
    """The probe service running on the test's database; yields (env for the CLI, base URL)."""
    url = database_url(store_url)
    config = {
        "AMQP_URI": amqp_uri,
        "DATABASE_URL": url,
        "WEB_SERVER_ADDRESS": "127.0.0.1:0",
        "LAVORO_TOKENS": f"tester:operator:{TOKEN}",
    }
    from tests.integration.test_runner import probe_service

    container = ServiceContainer(probe_service(unique), config)
    container.start()
    port = bound_port(container)
    yield cli_env(unique, url, port), f"http://127.0.0.1:{port}"
    container.kill()
    with kombu.Connection(amqp_uri) as conn:
        conn.default_channel.exchange_delete(f"{unique}.events")


def test_status_of_a_healthy_service(running_probe, engine, unique):
    env, base = running_probe
    for n in range(2):
        reply = requests.post(
            f"{base}/notes",
            json={"note_id": f"n{n}", "text": "x"},
            headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": f"k{n}"},
            timeout=5,
        )
        assert reply.status_code == 201
    wait_for(lambda: read_figures(engine).relay_lag == 0, message="the relay caught up")
    wait_for(
        lambda: requests.get(f"{base}/health", timeout=5).status_code == 200,
        message="a healthy probe",
    )

    result = invoke(["status", "--json", "--settle", "0"], env)
    assert result.exit_code == 0, result.output
    [row] = json_out(result)
    head = EventLog(engine).head()
    assert row["service"] == unique and row["state"] == "up" and row["problems"] == []
    assert (row["head_position"], row["head_hash"]) == head
    assert (row["relay_lag"], row["inbox"], row["dead_letters"], row["projection_lag"]) == (
        0,
        0,
        0,
        0,
    )
    assert row["projections"] == {"probe_notes": 0}

    table = invoke(["status", "--settle", "0"], env)
    assert table.exit_code == 0
    line = next(x for x in table.output.splitlines() if unique in x)
    assert " up " in line and head[1][:16] in line and line.rstrip(" │").endswith("ok")


def test_status_exits_1_when_a_service_is_down_parked_or_stuck(store_url, engine, unique, amqp_uri):
    log = EventLog(engine)
    log.append("note-a", 0, [NewEvent("note_added", {"note_id": "a", "text": "x"})])
    log.append("note-b", 0, [NewEvent("note_added", {"note_id": "b", "text": "x"})])
    park(engine, unique, amqp_uri, "calls", "award-1", 7)
    env = cli_env(unique, database_url(store_url), port=free_port())

    result = invoke(["status", "--json", "--settle", "0.2"], env)
    assert result.exit_code == 1
    [row] = json_out(result)
    assert row["state"] == "down"
    problems = row["problems"]
    assert problems[0].startswith("down: ")
    assert "1 dead letter(s) parked: `lavoro dlq list`" in problems
    # Nothing runs: the relay and the projection do not move, so they are stuck.
    assert "relay stuck at 0 (lag 2)" in problems
    assert "projection probe_notes stuck at 0 (lag 2)" in problems


def free_port() -> int:
    from tests.integration.test_runner import free_port as free

    return free()


def park(engine, service, amqp_uri, source, stream, position, event_id=None):
    office = DeadLetterOffice(engine, service, amqp_uri, SystemClock())
    parcel = Parcel(
        event_id or f"{stream}-{position}",
        source,
        stream,
        position,
        "grant_awarded",
        {"position": position},
        {},
    )
    office.park(parcel, "RuntimeError: no room on the line\n  File ...", 5)


def test_events_tail_follows_new_events_of_a_type(store_url, engine, unique):
    log = EventLog(engine)
    log.append("note-0", 0, [NewEvent("note_added", {"note_id": "0", "text": "before"})])
    env = cli_env(unique, database_url(store_url))
    tail = eventlet.spawn(
        invoke,
        ["events", "tail", "--type", "note_added", "--limit", "2", "--interval", "0.02"],
        env,
    )
    appended = []

    def append_until_tail_is_done():
        n = len(appended) + 1
        log.append(f"other-{n}", 0, [NewEvent("note_seen", {"n": n})])
        log.append(f"note-{n}", 0, [NewEvent("note_added", {"note_id": str(n), "text": "new"})])
        appended.append(n)
        return tail.dead

    wait_for(append_until_tail_is_done, message="the tail to print two events")
    result = tail.wait()
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    # Only events appended after it started (not note 0), in order, only of the type asked for.
    numbers = [json.loads(line.split("note_added  ", 1)[1])["note_id"] for line in lines]
    assert numbers[1] == str(int(numbers[0]) + 1) and numbers[0] != "0"
    assert all(f"  {unique}  #" in line and "note_seen" not in line for line in lines)

    history = invoke(["events", "tail", "--from-start", "--no-follow", "--json"], env)
    assert history.exit_code == 0
    events = [json.loads(line) for line in history.stdout.splitlines()]
    assert [e["position"] for e in events] == list(range(1, log.head()[0] + 1))
    assert {e["service"] for e in events} == {unique}


def test_dlq_list_retry_and_skip(store_url, engine, unique, amqp_uri):
    for position in (3, 4):
        park(engine, unique, amqp_uri, "calls", "award-1", position)
    park(engine, unique, amqp_uri, "calls", "award-2", 5)
    env = cli_env(unique, database_url(store_url))

    listed = invoke(["dlq", "list", "--json"], env)
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert [(r["service"], r["stream"], r["position"]) for r in rows] == [
        (unique, "award-1", 3),
        (unique, "award-1", 4),
        (unique, "award-2", 5),
    ]
    assert rows[0]["error"].startswith("RuntimeError: no room on the line")
    table = invoke(["dlq", "list", "--service", unique], env)
    assert "award-2" in table.output and "RuntimeError: no room on the line" in table.output

    retried = invoke(["dlq", "retry", "--service", unique, "--stream", "award-1"], env)
    assert retried.exit_code == 0
    assert f"{unique}: released 2 event(s) of 1 stream(s)" in retried.output
    skipped = invoke(
        ["dlq", "skip", "--service", unique, "--source", "calls", "--stream", "award-2"], env
    )
    assert skipped.exit_code == 0
    assert f"{unique}: skipped award-2-5; released 0 event(s) behind it" in skipped.output

    with engine.connect() as conn:
        statuses = sorted(conn.execute(sa.text("SELECT event_id, status FROM dead_letters")))
    assert statuses == [
        ("award-1-3", "retrying"),
        ("award-1-4", "retrying"),
        ("award-2-5", "skipped"),
    ]
    assert json.loads(invoke(["dlq", "list", "--json"], env).stdout) == []
    nothing = invoke(
        ["dlq", "skip", "--service", unique, "--source", "calls", "--stream", "award-2"], env
    )
    assert one_line_error(nothing) == "error: no parked event in stream 'award-2' of 'calls'"


def test_projections_rebuild_folds_the_log_again(store_url, engine, unique):
    notes_projection.create(engine)
    log = EventLog(engine, projections=[notes_projection])
    for n in range(3):
        log.append(f"note-{n}", 0, [NewEvent("note_added", {"note_id": str(n), "text": "x"})])
    with write_transaction(engine) as conn:
        conn.execute(notes.delete())  # a read model gone wrong
    env = cli_env(unique, database_url(store_url))

    result = invoke(["projections", "rebuild", "--service", unique], env)
    assert result.exit_code == 0, result.output
    assert f"{unique}: rebuilt probe_notes, 3 events folded, checkpoint 3" in result.stdout
    assert "probe_notes" in result.stderr and "3/3" in result.stderr  # the progress bar
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.select(notes.c.note_id)).scalars()) == ["0", "1", "2"]

    unknown = invoke(["projections", "rebuild", "--service", unique, "-p", "nope"], env)
    assert one_line_error(unknown) == (
        f"error: {unique} has no projection nope; it has probe_notes"
    )
    bare = {**env, "LAVORO_SERVICES": f"{unique}=tests.integration.test_runner:Misnamed"}
    none = invoke(["projections", "rebuild", "--service", unique], bare)
    assert none.exit_code == 0
    assert f"{unique} has no projections: nothing to rebuild" in none.output


def test_audit_verify_and_export_all(store_url, engine, unique, tmp_path):
    first, second, third = unique + "a", unique + "b", unique + "c"
    EventLog(engine).append("s", 0, [NewEvent("a", {"n": 1}), NewEvent("a", {"n": 2})])
    other = make_engine(f"sqlite:///{tmp_path / 'second.db'}")
    migrate(other)
    EventLog(other).append("s", 0, [NewEvent("b", {"n": 1})])
    env = {
        "LAVORO_SERVICES": ",".join(f"{name}={PROBE}" for name in (first, second, third)),
        f"{first.upper()}_DATABASE_URL": database_url(store_url),
        f"{second.upper()}_DATABASE_URL": f"sqlite:///{tmp_path / 'second.db'}",
        f"{third.upper()}_DATABASE_URL": f"sqlite:///{tmp_path / 'never-started.db'}",
    }

    ok = invoke(["audit", "verify", "--all"], env)
    assert ok.exit_code == 0, ok.output
    assert f"{first}: OK, 2 events, head 2 {EventLog(engine).head()[1]}" in ok.output
    assert f"{second}: OK, 1 events, head 1" in ok.output
    assert f"{third}: skipped, {third} has no database yet" in ok.output
    assert not (tmp_path / "never-started.db").exists()  # an audit creates nothing

    exported = invoke(["audit", "export", "--all", "--out", str(tmp_path / "export")], env)
    assert exported.exit_code == 0
    lines = (tmp_path / "export" / f"{first}.jsonl").read_text().splitlines()
    assert [json.loads(line)["position"] for line in lines] == [1, 2]
    assert (tmp_path / "export" / f"{second}.jsonl").read_text().count("\n") == 1
    assert not (tmp_path / "export" / f"{third}.jsonl").exists()

    with write_transaction(other) as conn:
        disable_append_only(conn)
        conn.execute(
            sa.text("UPDATE events SET data = :data WHERE position = 1"), {"data": '{"n":9}'}
        )
    broken = invoke(["audit", "verify", "--all", "--json"], env)
    assert broken.exit_code == 1
    by_name = {row["service"]: row for row in json_out(broken)}
    assert by_name[first]["ok"] is True
    assert (by_name[second]["ok"], by_name[second]["broken_at"]) == (False, 1)
    other.dispose()

    assert "--out" in one_line_error(invoke(["audit", "export", "--all"], env))
    assert "use --all" in one_line_error(invoke(["audit", "verify"], env))
    missing = invoke(["audit", "verify", "--service", third], env)
    assert f"{third} has no database yet" in one_line_error(missing)


def _commands(group, path=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name)


def test_every_command_has_help_with_an_example():
    commands = list(_commands(typer.main.get_command(app)))
    assert {("run",), ("status",), ("events", "tail"), ("dlq", "retry")} <= set(commands)
    for command in commands:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, command
        assert f"Example: lavoro {' '.join(command)}" in result.output, command


def test_errors_are_one_line(tmp_path):
    env = {"LAVORO_SERVICES": f"ghost={PROBE}", "GHOST_DATABASE_URL": f"sqlite:///{tmp_path}/g.db"}
    assert one_line_error(invoke(["status", "--service", "nope"], env)).startswith(
        "error: unknown service 'nope'; one of ghost"
    )
    assert "ghost has no database yet" in one_line_error(
        invoke(["events", "tail", "--service", "ghost"], env)
    )
    assert "LAVORO_SERVICES item 1" in one_line_error(
        invoke(["dlq", "list"], {"LAVORO_SERVICES": "Bad Name"})
    )
    assert "unknown service 'nope'" in one_line_error(invoke(["serve", "nope"], env))


def test_tokens_issue_list_and_revoke(tmp_path):
    path = tmp_path / "tokens.json"
    issued = runner.invoke(
        app,
        ["tokens", "issue", "--subject", "maria.rossi", "--role", "operator", "--file", str(path)],
    )
    assert issued.exit_code == 0
    token = issued.stdout.strip()
    assert Tokens(path).authenticate(token).subject == "maria.rossi"
    listed = runner.invoke(app, ["tokens", "list", "--file", str(path), "--json"])
    assert [(e["subject"], e["role"]) for e in json.loads(listed.stdout)] == [
        ("maria.rossi", "operator")
    ]
    assert token not in listed.stdout

    revoked = runner.invoke(
        app, ["tokens", "revoke", "--subject", "maria.rossi", "--file", str(path)]
    )
    assert revoked.exit_code == 0 and "revoked 1 token(s) of maria.rossi" in revoked.output
    with pytest.raises(Unauthorized):
        Tokens(path).authenticate(token)
    assert path.stat().st_mode & 0o777 == 0o600
    again = runner.invoke(
        app, ["tokens", "revoke", "--subject", "maria.rossi", "--file", str(path)]
    )
    assert one_line_error(again) == f"error: no token of 'maria.rossi' in {path}"
    bad_role = runner.invoke(
        app, ["tokens", "issue", "--subject", "x", "--role", "admin", "--file", str(path)]
    )
    assert "role 'admin' is not one of auditor, operator" in one_line_error(bad_role)
    lasting = runner.invoke(
        app,
        ["tokens", "issue", "--subject", "ada", "--role", "auditor", "--file", str(path)]
        + ["--expires", "2027-01-01T00:00:00Z"],
    )
    assert lasting.exit_code == 0, lasting.output
    listed = runner.invoke(app, ["tokens", "list", "--file", str(path)])
    assert (
        "ada  auditor" in listed.stdout and "expires 2027-01-01T00:00:00.000000Z" in listed.stdout
    )
    undated = runner.invoke(
        app,
        ["tokens", "issue", "--subject", "x", "--role", "auditor", "--file", str(path)]
        + ["--expires", "2027-01-01"],
    )
    assert "expected an RFC 3339 time with an offset" in one_line_error(undated)


def test_the_lavoro_commands_in_docs_operations_exist_with_those_options():
    text = (ROOT / "docs" / "operations.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            words = shlex.split(line.split("#", 1)[0])
            if "lavoro" in words:
                args = words[words.index("lavoro") + 1 :]
                commands.append(args[: _end(args)])
    assert len(commands) >= 15
    for args in commands:
        # Options are parsed before the eager --help: an unknown one fails here.
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        assert "Usage: " in result.output and "Example: lavoro" in result.output


def _end(args: list[str]) -> int:
    return next((i for i, word in enumerate(args) if word in (">", "<", "|")), len(args))
