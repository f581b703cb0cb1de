"""Key-encryption keys (KEKs): what keeps the per-person keys of shared/crypto.py unreadable to
anyone who holds only the database.

Each person's 256-bit key is stored in `person_keys` wrapped: AES-GCM under the KEK, with a fresh
96-bit nonce and the person's id as associated data (a wrapped key moved to another person's row
does not unwrap), beside the id of the KEK that wrapped it. The KEK itself comes from
configuration and never enters the database:

| setting | holds |
|---|---|
| `LAVORO_KEK_FILE` or `LAVORO_KEK` | the current KEK (a file holding it, or the value): wraps new keys, unwraps |
| `LAVORO_KEK_PREVIOUS_FILE` or `LAVORO_KEK_PREVIOUS` | during a rotation only: the KEK being replaced, unwraps only |

A KEK is 32 random bytes written as 64 hex digits or as base64 (url-safe or not, padding
optional); `Kek.generate()` / `lavoro keys generate` make one. Its id is the first 16 hex digits
of SHA-256 over a fixed label and the key: it tells KEKs apart and says nothing about them.

Rotation (`rewrap`, `lavoro keys rotate`) unwraps every person key under the KEK it names and
wraps it under the new one, in batches, one transaction each; the event log is not touched
(the person keys themselves, hence every ciphertext, stay the same). A key whose KEK is not
configured fails loudly (`UnknownKek`), never as erased.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import Engine

from shared import tables as t
from shared.config import ConfigError
from shared.db import is_sqlite, write_transaction

KEK_FILE_KEY = "LAVORO_KEK_FILE"
KEK_KEY = "LAVORO_KEK"
PREVIOUS_KEK_FILE_KEY = "LAVORO_KEK_PREVIOUS_FILE"
PREVIOUS_KEK_KEY = "LAVORO_KEK_PREVIOUS"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_ID_LABEL = b"lavoro kek id v1\0"
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


class KekConfigError(ConfigError):
    """A KEK setting is missing, unreadable or malformed (the message never holds a key)."""


class KeyUnwrapError(Exception):
    """A person's key cannot be unwrapped with the KEKs configured."""


class NoKek(KeyUnwrapError):
    """No KEK is configured, and a person key must be wrapped or unwrapped."""


class UnknownKek(KeyUnwrapError):
    """A person key is wrapped by a KEK that is not configured."""


class WrappedKeyTampered(KeyUnwrapError):
    """A wrapped key does not authenticate under its KEK: altered, or moved to another person."""


@dataclasses.dataclass(frozen=True)
class Kek:
    key: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != _KEY_BYTES:
            raise ValueError(f"a KEK is {_KEY_BYTES} bytes")

    @classmethod
    def generate(cls) -> Kek:
        return cls(secrets.token_bytes(_KEY_BYTES))

    @classmethod
    def parse(cls, text: str, where: str) -> Kek:
        """A KEK from its text (64 hex digits, or base64 of 32 bytes); `where` names the setting."""
        value = text.strip()
        raw: bytes | None = None
        if _HEX.match(value):
            raw = bytes.fromhex(value)
        else:
            try:
                padded = value + "=" * (-len(value) % 4)
                raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
            except (binascii.Error, ValueError):
                raw = None
        if raw is None or len(raw) != _KEY_BYTES:
            raise KekConfigError(
                f"{where}: a KEK is 32 bytes, written as 64 hex digits or in base64 "
                "(`lavoro keys generate` makes one)"
            )
        return cls(raw)

    @property
    def id(self) -> str:
        return hashlib.sha256(_ID_LABEL + self.key).hexdigest()[:16]

    def text(self) -> str:
        """The KEK as a file holds it: url-safe base64, no padding."""
        return base64.urlsafe_b64encode(self.key).decode("ascii").rstrip("=")

    def wrap(self, person_id: str, key: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + AESGCM(self.key).encrypt(nonce, key, _associated(person_id))

    def unwrap(self, person_id: str, wrapped: bytes) -> bytes:
        try:
            return AESGCM(self.key).decrypt(
                wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], _associated(person_id)
            )
        except InvalidTag:
            raise WrappedKeyTampered(
                f"the key of person {person_id!r} does not unwrap under KEK {self.id}: it was "
                "altered, or moved from another person"
            ) from None


def _associated(person_id: str) -> bytes:
    return b"lavoro person key v1\0" + person_id.encode("utf-8")


class Keyring:
    """The KEKs a process holds: the current one (wraps and unwraps; None if none is configured)
    and, during a rotation, previous ones (unwrap only)."""

    def __init__(self, current: Kek | None, previous: Iterable[Kek] = ()) -> None:
        self.current = current
        self.previous = tuple(k for k in previous if current is None or k.id != current.id)

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> Keyring:
        """From a service's config (the keys above), else the environment; no KEK configured
        gives a keyring without one (a service that seals personal data refuses to start)."""
        config = config or {}
        env = os.environ if env is None else env

        def setting(name: str) -> str | None:
            value = config.get(name) or env.get(name)
            return str(value) if value else None

        current = _read(setting(KEK_FILE_KEY), setting(KEK_KEY), KEK_FILE_KEY, KEK_KEY)
        previous = _read(
            setting(PREVIOUS_KEK_FILE_KEY),
            setting(PREVIOUS_KEK_KEY),
            PREVIOUS_KEK_FILE_KEY,
            PREVIOUS_KEK_KEY,
        )
        return cls(current, [previous] if previous is not None else [])

    @property
    def ids(self) -> list[str]:
        return [k.id for k in ([self.current] if self.current else []) + list(self.previous)]

    def wrap(self, person_id: str, key: bytes) -> tuple[str, bytes]:
        """(the current KEK's id, `key` wrapped under it)."""
        if self.current is None:
            raise NoKek(_NO_KEK)
        return self.current.id, self.current.wrap(person_id, key)

    def unwrap(self, person_id: str, kek_id: str, wrapped: bytes) -> bytes:
        for kek in ([self.current] if self.current else []) + list(self.previous):
            if kek.id == kek_id:
                return kek.unwrap(person_id, wrapped)
        if self.current is None:
            raise NoKek(_NO_KEK)
        raise UnknownKek(
            f"the key of person {person_id!r} is wrapped by KEK {kek_id}, which is not "
            f"configured (configured: {', '.join(self.ids)}); during a rotation set "
            f"{PREVIOUS_KEK_FILE_KEY} to the KEK being replaced"
        )


_NO_KEK = (
    f"no key-encryption key is configured: set {KEK_FILE_KEY} (a file holding it) or {KEK_KEY}; "
    "`lavoro run` makes a development one under var/"
)


def _read(file: str | None, value: str | None, file_key: str, value_key: str) -> Kek | None:
    if file and value:
        raise KekConfigError(f"set {file_key} or {value_key}, not both")
    if value:
        return Kek.parse(value, value_key)
    if not file:
        return None
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise KekConfigError(f"{file_key}: cannot read {file} ({reason})") from None
    return Kek.parse(text, f"{file_key} ({file})")


def write_kek(path: Path | str, kek: Kek) -> Path:
    """Write `kek` to a new file readable by its owner only; refuses to overwrite one."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(kek.text() + "\n")
    return path


# -- rotation ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rewrapped:
    rewrapped: int  # person keys now under the current KEK that were not before
    by_kek: dict[str, int]  # of those, how many each old KEK had wrapped


def rewrap(engine: Engine, keyring: Keyring, *, batch: int = 500) -> Rewrapped:
    """Wrap every person key of `engine`'s database under `keyring.current`, unwrapping each
    with whichever KEK of the keyring wrapped it. Batches of `batch` keys, one transaction each,
    so a running service waits on a few rows at a time; an erasure meanwhile deletes its row and
    nothing brings it back. The event log is not touched. UnknownKek, before anything of that
    batch is written, if a key is under a KEK the keyring does not hold."""
    if keyring.current is None:
        raise NoKek(_NO_KEK)
    target = keyring.current.id
    keys = t.person_keys.c
    counts: dict[str, int] = {}
    while True:
        with write_transaction(engine) as conn:
            query = (
                sa.select(keys.person_id, keys.kek_id, keys.wrapped_key)
                .where(keys.kek_id != target)
                .order_by(keys.person_id)
                .limit(batch)
            )
            if not is_sqlite(engine):
                query = query.with_for_update(skip_locked=False)
            rows = conn.execute(query).all()
            if not rows:
                break
            fresh = [
                (
                    row,
                    keyring.wrap(
                        row.person_id,
                        keyring.unwrap(row.person_id, row.kek_id, bytes(row.wrapped_key)),
                    ),
                )
                for row in rows
            ]
            for row, (kek_id, wrapped) in fresh:
                conn.execute(
                    t.person_keys.update()
                    .where(keys.person_id == row.person_id, keys.kek_id == row.kek_id)
                    .values(kek_id=kek_id, wrapped_key=wrapped)
                )
                counts[row.kek_id] = counts.get(row.kek_id, 0) + 1
    return Rewrapped(sum(counts.values()), counts)


def keys_by_kek(engine: Engine) -> dict[str, int]:
    """How many person keys each KEK wraps, by KEK id."""
    keys = t.person_keys.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(keys.kek_id, sa.func.count()).group_by(keys.kek_id)).all()
    return {str(kek_id): int(count) for kek_id, count in rows}
