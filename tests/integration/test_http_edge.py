"""The HTTP edge in front of a real store, on SQLite and PostgreSQL alike: what a command's body
may hold before anything is stored. A small service whose commands append what they are sent
(it needs no broker: HTTP entrypoints only)."""

from __future__ import annotations

import threading
import uuid
from types import SimpleNamespace

import eventlet
import pytest
import requests
from marshmallow import fields

from shared import unit_of_work
from shared.dependencies import EventStore, log_for
from shared.records import Aggregate, NewEvent
from shared.schemas import Schema
from shared.web import CommandRequest, bound_port, command
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

ADA = "ada-" + uuid.uuid4().hex
BEA = "bea-" + uuid.uuid4().hex


NOTES = Aggregate("notes", initial=lambda: 0, evolve=lambda count, _event: count + 1)
# The slow command waits here, so that a second request finds it in flight (no sleeping).
ENTERED, RELEASE = threading.Event(), threading.Event()


class NoteIn(Schema):
    text = fields.String(required=True)
    tags = fields.Dict(load_default=dict)


def note_plan(note_id: str, data: dict) -> unit_of_work.Plan:
    def plan(session: unit_of_work.Session) -> unit_of_work.Decision:
        session.load(NOTES, f"note-{note_id}")  # read first: any number of notes may follow
        return {f"note-{note_id}": [NewEvent("note_added", {"note_id": note_id, **data})]}

    return plan


class Notes:
    name = "edge_notes"
    store = EventStore()

    @command("POST", "/notes/<note_id>", schema=NoteIn, status=201)
    def add(self, cmd: CommandRequest, note_id: str) -> unit_of_work.Outcome:
        return unit_of_work.run(self.store, note_plan(note_id, cmd.data), command_id=cmd.id)

    @command("POST", "/slow/<note_id>", schema=NoteIn, status=201)
    def add_slowly(self, cmd: CommandRequest, note_id: str) -> unit_of_work.Outcome:
        ENTERED.set()
        RELEASE.wait(10)
        return unit_of_work.run(self.store, note_plan(note_id, cmd.data), command_id=cmd.id)


@pytest.fixture
def notes(container_factory, store_url, amqp_uri):
    url, schema = store_url
    config = {
        "AMQP_URI": amqp_uri,
        "WEB_SERVER_ADDRESS": "127.0.0.1:0",
        "DATABASE_URL": url,
        "LAVORO_TOKENS": f"ada:operator:{ADA},bea:operator:{BEA}",
    }
    if schema:
        config["DATABASE_SCHEMA"] = schema
    container = container_factory(Notes, config)
    container.start()
    base = f"http://127.0.0.1:{bound_port(container)}"

    def post(path, body, *, key=None, token=ADA):
        headers = {
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": key or uuid.uuid4().hex,
            "Content-Type": "application/json",
        }
        data = body if isinstance(body, bytes) else None
        json_body = None if isinstance(body, bytes) else body
        response = requests.post(
            base + path, data=data, json=json_body, headers=headers, timeout=10
        )
        assert response.headers["Content-Type"].startswith("application/json"), response.text
        response.body = response.json()
        return response

    yield SimpleNamespace(post=post, log=log_for(container))
    container.stop()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"text": "a\\u0000b"}', "text"),
        (b'{"text": "ok", "tags": {"k": "\\u0000"}}', "tags.k"),
        (b'{"text": "\\ud800"}', "text"),
        (b'{"text": "ok", "tags": {"\\udfff": "v"}}', "tags.\\udfff"),
    ],
    ids=["nul", "nested-nul", "surrogate", "surrogate-name"],
)
def test_a_nul_or_a_lone_surrogate_is_422_on_either_store_and_nothing_is_stored(notes, body, field):
    refused = notes.post("/notes/n1", body)
    assert refused.status_code == 422, refused.body
    assert list(refused.body["fields"]) == [field]
    assert notes.log.head()[0] == 0
    # The same command with sound text is stored.
    stored = notes.post("/notes/n1", {"text": "a b", "tags": {"k": "v"}})
    assert stored.status_code == 201, stored.body
    assert notes.log.read_stream("note-n1")[0].data["text"] == "a b"


def appended(notes) -> list[tuple[str, str]]:
    return [(e.stream, e.data["text"]) for e in notes.log.read_all()]


def test_the_same_key_and_body_from_the_same_actor_is_one_command(notes):
    first = notes.post("/notes/n1", {"text": "hello"}, key="k1")
    again = notes.post("/notes/n1", {"text": "hello"}, key="k1")
    assert (first.status_code, first.body["repeated"]) == (201, False)
    assert (again.status_code, again.body["repeated"]) == (201, True)
    assert again.body["events"] == first.body["events"]
    assert appended(notes) == [("note-n1", "hello")]


def test_the_same_key_with_another_body_is_422_naming_the_header_and_stores_nothing(notes):
    assert notes.post("/notes/n1", {"text": "hello"}, key="k1").status_code == 201
    reused = notes.post("/notes/n1", {"text": "something else"}, key="k1")
    assert reused.status_code == 422, reused.body
    assert reused.body["error"] == "idempotency_key_reused"
    assert list(reused.body["fields"]) == ["Idempotency-Key"]
    assert "Idempotency-Key" in reused.body["message"]
    assert appended(notes) == [("note-n1", "hello")]


def test_the_same_key_from_another_actor_or_on_another_endpoint_is_another_command(notes):
    mine = notes.post("/notes/n1", {"text": "hello"}, key="k1", token=ADA)
    theirs = notes.post("/notes/n1", {"text": "hello"}, key="k1", token=BEA)
    elsewhere = notes.post("/notes/n2", {"text": "hello"}, key="k1", token=ADA)
    for answer in (mine, theirs, elsewhere):
        assert (answer.status_code, answer.body["repeated"]) == (201, False), answer.body
    assert appended(notes) == [("note-n1", "hello"), ("note-n1", "hello"), ("note-n2", "hello")]
    assert [e.actor for e in notes.log.read_all()] == ["ada", "bea", "ada"]


def test_a_request_whose_key_is_still_in_flight_is_409_and_the_first_one_still_counts(notes):
    ENTERED.clear()
    RELEASE.clear()
    first = eventlet.spawn(notes.post, "/slow/n1", {"text": "hello"}, key="k-slow")
    try:
        wait_for(ENTERED.is_set, message="the first request in the method")
        second = notes.post("/slow/n1", {"text": "hello"}, key="k-slow")
        assert second.status_code == 409, second.body
        assert second.body["error"] == "idempotency_key_in_flight"
        assert list(second.body["fields"]) == ["Idempotency-Key"]
    finally:
        RELEASE.set()
    assert first.wait().status_code == 201
    again = notes.post("/slow/n1", {"text": "hello"}, key="k-slow")
    assert (again.status_code, again.body["repeated"]) == (201, True)
    assert appended(notes) == [("note-n1", "hello")]
