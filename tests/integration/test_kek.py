"""Person keys wrapped by a key-encryption key (KEK) from configuration, never in the database:
a copy of the database alone opens no sealed value, with the KEK it opens every one, and a
rotation re-wraps every key without touching the log (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import shutil

import pytest
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared import tables as t
from shared.crypto import ERASED, Vault, erase_person
from shared.db import make_engine
from shared.kek import Kek, KekConfigError, Keyring, NoKek, UnknownKek, rewrap
from shared.records import NewEvent

PEOPLE = {f"p-{n}": f"Persona Numero{n}" for n in range(4)}


def seal_everyone(log, vault) -> dict[str, str]:
    """Each person's name sealed into an event, as a service's store does it."""
    sealed = {}
    for person_id, name in PEOPLE.items():
        with log.transaction() as tx:
            sealed[person_id] = vault.seal(person_id, name, conn=tx.conn)
            tx.append(
                f"applicant-{person_id}", 0, [NewEvent("applied", {"name": sealed[person_id]})]
            )
    return sealed


def stored_keys(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(t.person_keys).order_by(t.person_keys.c.person_id)).all()


def test_a_copy_of_the_database_without_the_kek_opens_no_sealed_value(log, engine):
    kek = Kek.generate()
    vault = Vault(engine, keys=Keyring(kek))
    sealed = seal_everyone(log, vault)

    rows = stored_keys(engine)
    assert [row.person_id for row in rows] == sorted(PEOPLE)
    assert {row.kek_id for row in rows} == {kek.id}
    for text in sealed.values():
        nonce, body = _parts(text)
        header = text.rsplit(":", 2)[0].encode()
        # Whatever 32 bytes of the table one tries as the person's key, nothing opens.
        for row in rows:
            blob = bytes(row.wrapped_key)
            for start in range(len(blob) - 31):
                with pytest.raises(InvalidTag):
                    AESGCM(blob[start : start + 32]).decrypt(nonce, body, header)

    other = Vault(engine, keys=Keyring(Kek.generate()), cache_ttl=0)
    none = Vault(engine, keys=Keyring(None), cache_ttl=0)
    for person_id, text in sealed.items():
        with pytest.raises(UnknownKek, match=kek.id):  # loudly: never read as erased
            other.open(text)
        with pytest.raises(NoKek):
            none.open(text)
        assert Vault(engine, keys=Keyring(kek), cache_ttl=0).open(text) == PEOPLE[person_id]
    with pytest.raises(NoKek):
        none.seal("p-new", "no key can be made without a KEK")


def test_a_copied_sqlite_file_is_opened_with_the_kek_and_only_with_it(tmp_path):
    from shared.db import migrate
    from shared.eventlog import EventLog

    kek = Kek.generate()
    original = make_engine(f"sqlite:///{tmp_path / 'calls.db'}")
    migrate(original, keyring=Keyring(kek))
    log = EventLog(original)
    sealed = seal_everyone(log, Vault(original, keys=Keyring(kek)))
    original.dispose()
    shutil.copy(tmp_path / "calls.db", tmp_path / "stolen.db")

    stolen = make_engine(f"sqlite:///{tmp_path / 'stolen.db'}")
    thief = Vault(stolen, keys=Keyring(None), cache_ttl=0)
    owner = Vault(stolen, keys=Keyring(kek), cache_ttl=0)
    for person_id, text in sealed.items():
        with pytest.raises(NoKek):
            thief.open(text)
        assert owner.open(text) == PEOPLE[person_id]
    raw = (tmp_path / "stolen.db").read_bytes()
    assert kek.key not in raw and all(name.encode() not in raw for name in PEOPLE.values())
    stolen.dispose()


def test_a_rotation_rewraps_every_key_and_leaves_the_log_as_it_was(log, engine):
    old, new = Kek.generate(), Kek.generate()
    vault = Vault(engine, keys=Keyring(old))
    sealed = seal_everyone(log, vault)
    erase_person(log, vault, "p-0")
    before = (list(log.read_all()), log.verify())

    # While the services read under both, the rotation runs.
    both = Vault(engine, keys=Keyring(new, previous=[old]), cache_ttl=0)
    assert both.open(sealed["p-1"]) == PEOPLE["p-1"]
    done = rewrap(engine, Keyring(new, previous=[old]), batch=2)

    assert (done.rewrapped, done.by_kek) == (3, {old.id: 3})
    assert {row.kek_id for row in stored_keys(engine)} == {new.id}
    assert (list(log.read_all()), log.verify()) == before  # not one event touched
    after = Vault(engine, keys=Keyring(new), cache_ttl=0)
    assert {p: after.open(text) for p, text in sealed.items()} == {**PEOPLE, "p-0": ERASED}
    with pytest.raises(UnknownKek):
        Vault(engine, keys=Keyring(old), cache_ttl=0).open(sealed["p-1"])
    assert rewrap(engine, Keyring(new, previous=[old])).rewrapped == 0  # nothing left to do


def test_a_rotation_without_the_kek_a_key_is_under_stops_and_says_which(log, engine):
    old, new, lost = Kek.generate(), Kek.generate(), Kek.generate()
    seal_everyone(log, Vault(engine, keys=Keyring(old)))
    with pytest.raises(UnknownKek, match=old.id):
        rewrap(engine, Keyring(new, previous=[lost]))
    assert {row.kek_id for row in stored_keys(engine)} == {old.id}


@pytest.mark.parametrize("spelling", ["hex", "base64url", "base64"])
def test_a_kek_reads_from_a_file_or_the_environment_and_names_a_bad_one(tmp_path, spelling):
    import base64

    kek = Kek.generate()
    text = {
        "hex": kek.key.hex(),
        "base64url": base64.urlsafe_b64encode(kek.key).decode().rstrip("="),
        "base64": base64.b64encode(kek.key).decode(),
    }[spelling]
    path = tmp_path / "kek"
    path.write_text(text + "\n")
    assert Keyring.from_config({"LAVORO_KEK_FILE": str(path)}, env={}).current == kek
    assert Keyring.from_config({}, env={"LAVORO_KEK": text}).current == kek
    older = Kek.generate()
    rotating = Keyring.from_config(
        {}, env={"LAVORO_KEK": older.text(), "LAVORO_KEK_PREVIOUS": text}
    )
    assert (rotating.current, rotating.previous) == (older, (kek,))
    assert Keyring.from_config({}, env={}).current is None

    for bad, complaint in [
        ({"LAVORO_KEK": "too-short"}, "LAVORO_KEK: a KEK is 32 bytes"),
        ({"LAVORO_KEK_FILE": str(tmp_path / "absent")}, "LAVORO_KEK_FILE: cannot read"),
        ({"LAVORO_KEK": text, "LAVORO_KEK_FILE": str(path)}, "not both"),
    ]:
        with pytest.raises(KekConfigError, match=complaint) as caught:
            Keyring.from_config({}, env=bad)
        assert text not in str(caught.value)


def test_kek_ids_tell_keks_apart_and_reveal_nothing_of_them():
    keks = [Kek.generate() for _ in range(20)]
    assert len({k.id for k in keks}) == 20
    for kek in keks:
        assert len(kek.id) == 16 and kek.key.hex()[:16] != kek.id
    for a, b in itertools.combinations(keks[:3], 2):
        assert a != b


def _parts(text: str) -> tuple[bytes, bytes]:
    import base64

    _, nonce, body = text.rsplit(":", 2)
    unb64 = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))  # noqa: E731
    return unb64(nonce), unb64(body)


def test_lavoro_keys_generate_then_rotate_a_services_keys(store_url, log, engine, tmp_path):
    import json as json_
    import urllib.parse

    from typer.testing import CliRunner

    from shared.cli import app

    runner = CliRunner()
    old_file, new_file = tmp_path / "old.kek", tmp_path / "new.kek"
    for path in (old_file, new_file):
        made = runner.invoke(app, ["keys", "generate", "--out", str(path)])
        assert made.exit_code == 0, made.output
        assert path.stat().st_mode & 0o777 == 0o600
    again = runner.invoke(app, ["keys", "generate", "--out", str(old_file)])
    assert again.exit_code == 1 and "never overwritten" in again.output
    old = Kek.parse(old_file.read_text(), "old")
    new = Kek.parse(new_file.read_text(), "new")
    assert f"KEK {new.id} written to {new_file}" in made.output

    sealed = seal_everyone(log, Vault(engine, keys=Keyring(old)))
    head = log.head()
    url, schema = store_url
    if schema:
        url += "?options=" + urllib.parse.quote(f"-csearch_path={schema}")
    env = {"LEDGER_DATABASE_URL": url}
    args = ["keys", "rotate", "--service", "ledger"]
    files = ["--old-kek-file", str(old_file), "--new-kek-file", str(new_file)]
    rotated = runner.invoke(app, [*args, *files], env=env)
    assert rotated.exit_code == 0, rotated.output
    assert (
        f"ledger: 4 person key(s) re-wrapped from KEK {old.id} to {new.id}; 4 under it now; "
        "no event touched"
    ) in rotated.output
    assert log.head() == head
    opened = Vault(engine, keys=Keyring(new), cache_ttl=0)
    assert {p: opened.open(text) for p, text in sealed.items()} == PEOPLE

    twice = runner.invoke(app, [*args, *files, "--json"], env=env)
    assert json_.loads(twice.stdout)[0]["rewrapped"] == 0
    same = runner.invoke(
        app, [*args, "--old-kek-file", str(old_file), "--new-kek-file", str(old_file)], env=env
    )
    assert same.exit_code == 1 and "the same key" in same.output
    other_file = tmp_path / "other.kek"
    runner.invoke(app, ["keys", "generate", "--out", str(other_file)])
    lost = runner.invoke(  # keys under neither KEK given: one line saying which
        app, [*args, "--old-kek-file", str(old_file), "--new-kek-file", str(other_file)], env=env
    )
    assert lost.exit_code == 1 and lost.output.startswith("error: ")
    assert f"wrapped by KEK {new.id}, which is not configured" in lost.output
    assert "Traceback" not in lost.output


def test_a_service_that_seals_personal_data_refuses_to_start_without_a_kek(
    tmp_path, unique, amqp_uri, monkeypatch
):
    from marshmallow import fields
    from nameko.containers import ServiceContainer

    from shared.contracts import Contracts
    from shared.dependencies import EventStore
    from shared.schemas import Personal, Schema
    from shared.web import http

    class Applied(Schema):
        person_id = fields.String(required=True)
        name = Personal(fields.String(), required=True)

    class Sealing:
        name = unique
        store = EventStore(
            contracts=Contracts(emitted={"applied": (1, Applied)}, persons={"applied": "person_id"})
        )

        @http("GET", "/nothing", public=True)
        def nothing(self, request):
            return {}

    monkeypatch.delenv("LAVORO_KEK", raising=False)
    monkeypatch.delenv("LAVORO_KEK_FILE", raising=False)
    config = {
        "AMQP_URI": amqp_uri,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'sealing.db'}",
        "WEB_SERVER_ADDRESS": "127.0.0.1:0",
    }
    container = ServiceContainer(Sealing, config)
    with pytest.raises(KekConfigError, match="seals personal data and no key-encryption key"):
        container.start()
    container.kill()
