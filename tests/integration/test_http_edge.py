"""The HTTP edge in front of a real store, on SQLite and PostgreSQL alike: what a command's body
may hold before anything is stored. A small service whose commands append what they are sent
(it needs no broker: HTTP entrypoints only)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
import requests
from marshmallow import fields

from shared import unit_of_work
from shared.dependencies import EventStore, log_for
from shared.records import NewEvent
from shared.schemas import Schema
from shared.web import CommandRequest, bound_port, command

pytestmark = pytest.mark.integration

ADA = "ada-" + uuid.uuid4().hex
BEA = "bea-" + uuid.uuid4().hex


class NoteIn(Schema):
    text = fields.String(required=True)
    tags = fields.Dict(load_default=dict)


class Notes:
    name = "edge_notes"
    store = EventStore()

    @command("POST", "/notes/<note_id>", schema=NoteIn, status=201)
    def add(self, cmd: CommandRequest, note_id: str) -> unit_of_work.Outcome:
        event = NewEvent("note_added", {"note_id": note_id, **cmd.data})
        return unit_of_work.run(
            self.store, lambda session: {f"note-{note_id}": [event]}, command_id=cmd.id
        )


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
