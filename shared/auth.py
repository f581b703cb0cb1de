"""Bearer tokens and roles: who is calling the HTTP edge, and what their role lets them do.

Tokens come from configuration, never from code:
- a tokens file (config/env `LAVORO_TOKENS_FILE`, default `var/tokens.json`) holding only the
  SHA-256 of each token: `{"tokens": [{"token_sha256": hex, "subject": "...", "role": "...",
  "expires_at": "2027-01-01T00:00:00Z"}]}` (`expires_at` optional), written by `issue_token`
  (which prints the token once and keeps only its hash);
- `LAVORO_TOKENS` (`subject:role:token[:expires=<RFC 3339>],...`) for tests and development,
  hashed on load.

A stolen copy of the file does not reveal a token. Presented tokens are hashed and compared with
`hmac.compare_digest` against every entry, so timing does not tell how close a guess was. A token
at or past its `expires_at` answers 401 like an unknown one.

The file is re-read when it changes. A malformed file at start stops the service; one that turns
malformed later is logged (its path and what is wrong, never a token or a hash) and the last good
tokens stay in force, so requests keep their answers; `Tokens.problem` says what is wrong until
the file reads again, and `/health` reports it (degraded).

Roles: `operator` runs commands and reads; `auditor` reads and audits, and may not change anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import structlog

from shared.clock import Clock, SystemClock, format_ts, parse_ts
from shared.db import ROOT
from shared.errors import Forbidden, Unauthorized

TOKENS_FILE_KEY = "LAVORO_TOKENS_FILE"
TOKENS_KEY = "LAVORO_TOKENS"
EXPIRES = ":expires="  # the suffix of an inline token that expires
_log = structlog.get_logger("lavoro.auth")

READ = "read"
COMMAND = "command"
AUDIT = "audit"

# What each role may do. The edge asks for an action, never for a role, so this table is the
# only place that says who may do what.
ROLES: dict[str, frozenset[str]] = {
    "operator": frozenset({COMMAND, READ}),
    "auditor": frozenset({READ, AUDIT}),
}

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# The subject becomes the event's `actor` (a 200-character column) and travels in log lines.
_SUBJECT = re.compile(r"^[A-Za-z0-9._@+-]{1,200}$")


class TokenConfigError(ValueError):
    """The tokens file or `LAVORO_TOKENS` is malformed: refuse to start rather than guess."""


@dataclasses.dataclass(frozen=True)
class Principal:
    """An authenticated caller: `subject` becomes the events' actor."""

    subject: str
    role: str

    def may(self, action: str) -> bool:
        return action in ROLES.get(self.role, frozenset())


@dataclasses.dataclass(frozen=True)
class TokenEntry:
    token_sha256: str
    subject: str
    role: str
    expires_at: dt.datetime | None = None  # refused from this instant on

    def expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def default_tokens_file() -> Path:
    var = Path(os.environ.get("LAVORO_VAR", ROOT / "var"))
    return var / "tokens.json"


def _check_entry(subject: Any, role: Any, where: str) -> None:
    if not isinstance(subject, str) or not _SUBJECT.match(subject):
        raise TokenConfigError(
            f"{where}: subject {subject!r} must be 1-200 characters of letters, digits, . _ @ + -"
        )
    if role not in ROLES:
        raise TokenConfigError(f"{where}: role {role!r} is not one of {', '.join(sorted(ROLES))}")


def _expiry(value: Any, where: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return parse_ts(value)
    raise TokenConfigError(
        f"{where}: expires_at must be an RFC 3339 time with an offset, e.g. 2027-01-01T00:00:00Z"
    )


def read_tokens_file(path: Path | str) -> list[TokenEntry]:
    """The entries of a tokens file; TokenConfigError naming the file and entry if malformed."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TokenConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get("tokens"), list):
        raise TokenConfigError(f'{path}: expected {{"tokens": [...]}}')
    entries = []
    for index, item in enumerate(document["tokens"]):
        where = f"{path}: tokens[{index}]"
        if not isinstance(item, dict):
            raise TokenConfigError(f"{where}: expected an object")
        digest = item.get("token_sha256")
        if not isinstance(digest, str) or not _HEX64.match(digest):
            raise TokenConfigError(f"{where}: token_sha256 must be 64 lowercase hex digits")
        _check_entry(item.get("subject"), item.get("role"), where)
        expires_at = _expiry(item.get("expires_at"), where)
        entries.append(TokenEntry(digest, item["subject"], item["role"], expires_at))
    return entries


def parse_inline_tokens(text: str) -> list[TokenEntry]:
    """`subject:role:token[:expires=<RFC 3339>],...` (the token itself may contain `:`), hashed
    at once."""
    entries = []
    for index, item in enumerate(part.strip() for part in text.split(",")):
        if not item:
            continue
        where = f"{TOKENS_KEY} item {index + 1}"
        subject, _, rest = item.partition(":")
        role, _, token = rest.partition(":")
        expires_at = None
        if EXPIRES in token:
            token, _, expiry = token.rpartition(EXPIRES)
            expires_at = _expiry(expiry, where)
        if not token:
            raise TokenConfigError(f"{where}: expected subject:role:token[:expires=<time>]")
        _check_entry(subject, role, where)
        entries.append(TokenEntry(hash_token(token), subject, role, expires_at))
    return entries


def issue_token(
    path: Path | str, subject: str, role: str, *, expires_at: dt.datetime | None = None
) -> str:
    """Create a token for `subject` with `role` (refused from `expires_at` on, if given), add its
    hash to the file, and return the token.

    The token is shown only here: the file keeps its SHA-256. The file is replaced atomically and
    readable by its owner only.
    """
    _check_entry(subject, role, "issue_token")
    path = Path(path)
    entries: list[dict[str, Any]] = []
    if path.exists():
        read_tokens_file(path)  # refuse to extend a file we could not read back
        entries = json.loads(path.read_text(encoding="utf-8"))["tokens"]
    token = secrets.token_urlsafe(32)
    entry = {
        "token_sha256": hash_token(token),
        "subject": subject,
        "role": role,
        "issued_at": format_ts(SystemClock().now()),
    }
    if expires_at is not None:
        entry["expires_at"] = format_ts(expires_at)
    entries.append(entry)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"tokens": entries}, out, indent=2)
        out.write("\n")
    os.replace(scratch, path)
    return token


class Tokens:
    """The tokens a service accepts: its file (re-read when it changes, so a revoked token stops
    working without a restart) plus the inline `LAVORO_TOKENS`. A file malformed at start raises
    TokenConfigError; one that turns malformed later leaves the last good tokens in force and
    sets `problem` (see the module docstring)."""

    def __init__(
        self,
        path: Path | str | None = None,
        inline: Iterable[TokenEntry] = (),
        *,
        required: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.path = Path(path) if path else None
        self.clock = clock or SystemClock()
        self._problem: str | None = None
        self._inline = list(inline)
        self._file_entries: list[TokenEntry] = []
        self._file_stamp: tuple[int, int] | None = None
        if self.path is not None and required and not self.path.exists():
            raise TokenConfigError(f"{TOKENS_FILE_KEY} names {self.path}, which does not exist")
        self._refresh(at_start=True)

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> Tokens:
        """From a service's config (keys `LAVORO_TOKENS_FILE`, `LAVORO_TOKENS`), else the
        environment, else the default file. A file named explicitly must exist."""
        config = config or {}
        env = os.environ if env is None else env
        named = config.get(TOKENS_FILE_KEY) or env.get(TOKENS_FILE_KEY)
        inline = config.get(TOKENS_KEY) or env.get(TOKENS_KEY) or ""
        return cls(
            named or default_tokens_file(), parse_inline_tokens(inline), required=bool(named)
        )

    def _refresh(self, *, at_start: bool = False) -> None:
        if self.path is None:
            return
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._file_entries, self._file_stamp, self._problem = [], None, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._file_stamp:
            return
        self._file_stamp = stamp  # a broken file is read (and logged) once, not per request
        try:
            entries = read_tokens_file(self.path)
        except TokenConfigError as exc:
            if at_start:
                raise
            self._problem = str(exc)
            _log.error(
                "tokens file unreadable: the last good tokens stay in force",
                problem=self._problem,
                tokens=len(self._file_entries),
            )
            return
        if self._problem is not None:
            _log.info("tokens file readable again", tokens_file=str(self.path))
        self._file_entries, self._problem = entries, None

    @property
    def problem(self) -> str | None:
        """Why the file could not be read again (the last good tokens are in force), or None."""
        self._refresh()
        return self._problem

    @property
    def entries(self) -> list[TokenEntry]:
        self._refresh()
        return self._inline + self._file_entries

    def authenticate(self, token: str | None) -> Principal:
        """The principal a token belongs to; Unauthorized if it is missing or unknown."""
        if not token:
            raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
        presented = hash_token(token)
        found: TokenEntry | None = None
        # Compare against every entry, without stopping at a match.
        for entry in self.entries:
            if hmac.compare_digest(presented, entry.token_sha256) and found is None:
                found = entry
        if found is None:
            raise Unauthorized("unknown bearer token")
        if found.expired(self.clock.now()):
            raise Unauthorized("bearer token expired")
        return Principal(found.subject, found.role)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authorise(principal: Principal, action: str) -> None:
    """Forbidden unless the principal's role allows `action` (`read`, `command`, `audit`)."""
    if action not in {READ, COMMAND, AUDIT}:
        raise ValueError(f"unknown action {action!r}")
    if not principal.may(action):
        raise Forbidden(
            f"role {principal.role!r} may not {action}",
            fields={},
            role=principal.role,
            action=action,
        )
