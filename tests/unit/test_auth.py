"""Tokens and roles (shared.auth): only hashes are stored, every entry is compared, roles decide."""

from __future__ import annotations

import json
import stat

import pytest
import structlog

from shared import auth
from shared.auth import (
    AUDIT,
    COMMAND,
    READ,
    Principal,
    TokenConfigError,
    Tokens,
    authorise,
    bearer_token,
    hash_token,
    issue_token,
    parse_inline_tokens,
)
from shared.errors import Forbidden, Unauthorized


def test_issue_token_stores_only_the_hash_in_an_owner_only_file(tmp_path):
    path = tmp_path / "var" / "tokens.json"
    token = issue_token(path, "ada", "operator")

    text = path.read_text()
    assert token not in text
    (entry,) = json.loads(text)["tokens"]
    assert entry["token_sha256"] == hash_token(token)
    assert (entry["subject"], entry["role"]) == ("ada", "operator")
    assert entry["issued_at"].endswith("Z")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) >= 40  # 32 random bytes


def test_issued_tokens_authenticate_to_their_subject_and_role(tmp_path):
    path = tmp_path / "tokens.json"
    operator = issue_token(path, "ada", "operator")
    auditor = issue_token(path, "bea", "auditor")
    tokens = Tokens(path)

    assert tokens.authenticate(operator) == Principal("ada", "operator")
    assert tokens.authenticate(auditor) == Principal("bea", "auditor")
    assert operator != auditor


@pytest.mark.parametrize("presented", [None, "", "not-a-token"])
def test_a_missing_or_unknown_token_is_unauthorized(tmp_path, presented):
    path = tmp_path / "tokens.json"
    issue_token(path, "ada", "operator")
    with pytest.raises(Unauthorized) as caught:
        Tokens(path).authenticate(presented)
    assert caught.value.status == 401


def test_every_entry_is_compared_in_constant_time_without_stopping_at_a_match(
    tmp_path, monkeypatch
):
    path = tmp_path / "tokens.json"
    first = issue_token(path, "ada", "operator")
    for subject in ("bea", "cleo", "dino"):
        issue_token(path, subject, "auditor")
    compared = []
    real = auth.hmac.compare_digest

    def counting(a, b):
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    assert Tokens(path).authenticate(first).subject == "ada"
    assert len(compared) == 4


def test_inline_tokens_are_hashed_on_load_and_may_contain_colons():
    entries = parse_inline_tokens("ada:operator:s3:cr:et, bea:auditor:other,")
    assert [(e.subject, e.role) for e in entries] == [("ada", "operator"), ("bea", "auditor")]
    assert entries[0].token_sha256 == hash_token("s3:cr:et")
    assert Tokens(None, entries).authenticate("s3:cr:et") == Principal("ada", "operator")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("ada:operator", "expected subject:role:token"),
        ("ada:admin:secret", "role 'admin'"),
        ("a d a:operator:secret", "subject"),
    ],
)
def test_malformed_inline_tokens_are_refused_clearly(text, complaint):
    with pytest.raises(TokenConfigError, match=complaint):
        parse_inline_tokens(text)


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ("{not json", "not valid JSON"),
        ('{"tokens": {}}', 'expected {"tokens": \\[...\\]}'),
        ('{"tokens": [{"token_sha256": "abc", "subject": "ada", "role": "operator"}]}', "64"),
        (
            '{"tokens": [{"token_sha256": "' + "a" * 64 + '", "subject": "ada", "role": "boss"}]}',
            "role",
        ),
    ],
)
def test_a_malformed_tokens_file_is_refused_naming_the_file(tmp_path, document, complaint):
    path = tmp_path / "tokens.json"
    path.write_text(document)
    with pytest.raises(TokenConfigError, match=complaint) as caught:
        Tokens(path)
    assert str(path) in str(caught.value)
    with pytest.raises(TokenConfigError):
        issue_token(path, "ada", "operator")  # never overwrite a file it cannot read


def test_config_names_the_file_and_an_explicit_missing_file_stops_the_service(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("LAVORO_TOKENS", raising=False)
    monkeypatch.delenv("LAVORO_TOKENS_FILE", raising=False)
    with pytest.raises(TokenConfigError, match="does not exist"):
        Tokens.from_config({"LAVORO_TOKENS_FILE": str(tmp_path / "absent.json")})

    monkeypatch.setenv("LAVORO_VAR", str(tmp_path))
    default = Tokens.from_config({})
    assert default.path == tmp_path / "tokens.json"
    assert default.entries == []  # the default file may not exist yet: nobody gets in

    token = issue_token(tmp_path / "tokens.json", "ada", "operator")
    from_env = Tokens.from_config({}, env={"LAVORO_TOKENS": "bea:auditor:b-token"})
    assert from_env.authenticate(token).subject == "ada"
    assert from_env.authenticate("b-token").subject == "bea"


def test_a_changed_file_is_read_again_so_revocation_needs_no_restart(tmp_path):
    path = tmp_path / "tokens.json"
    old = issue_token(path, "ada", "operator")
    tokens = Tokens(path)
    assert tokens.authenticate(old).subject == "ada"

    path.unlink()
    with pytest.raises(Unauthorized):
        tokens.authenticate(old)
    new = issue_token(path, "ada", "operator")
    assert tokens.authenticate(new).subject == "ada"


def test_operators_command_and_read_auditors_read_and_audit():
    operator, auditor = Principal("ada", "operator"), Principal("bea", "auditor")
    for principal, allowed, refused in [
        (operator, {COMMAND, READ}, AUDIT),
        (auditor, {READ, AUDIT}, COMMAND),
    ]:
        for action in allowed:
            authorise(principal, action)
        with pytest.raises(Forbidden) as caught:
            authorise(principal, refused)
        assert caught.value.status == 403
        assert caught.value.details == {"role": principal.role, "action": refused}
    with pytest.raises(ValueError, match="unknown action"):
        authorise(operator, "delete")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_reads_only_the_bearer_scheme(header, token):
    assert bearer_token(header) == token


def test_a_file_broken_after_start_keeps_the_last_good_tokens_and_names_the_problem(tmp_path):
    path = tmp_path / "tokens.json"
    token = issue_token(path, "ada", "operator")
    tokens = Tokens(path)
    assert tokens.problem is None

    path.write_text('{"tokens": [{"token_sha256": "' + hash_token(token) + '", "subject": ')
    with structlog.testing.capture_logs() as lines:
        assert tokens.authenticate(token) == Principal("ada", "operator")  # not a 500
        tokens.authenticate(token)
    assert str(path) in tokens.problem and "not valid JSON" in tokens.problem
    errors = [line for line in lines if line["log_level"] == "error"]
    assert len(errors) == 1  # once per change of the file, not once per request
    assert errors[0]["problem"] == tokens.problem
    assert token not in str(lines) and hash_token(token) not in str(lines)

    again = issue_token(tmp_path / "fixed.json", "bea", "auditor")
    (tmp_path / "fixed.json").replace(path)
    assert tokens.authenticate(again) == Principal("bea", "auditor")
    assert tokens.problem is None
    with pytest.raises(Unauthorized):
        tokens.authenticate(token)


def test_a_token_past_its_expiry_answers_401(tmp_path):
    from shared.clock import FixedClock, parse_ts

    clock = FixedClock(parse_ts("2026-12-31T23:59:59Z"))
    path = tmp_path / "tokens.json"
    lasting = issue_token(path, "ada", "operator", expires_at=parse_ts("2027-01-01T00:00:00Z"))
    forever = issue_token(path, "bea", "auditor")
    inline = parse_inline_tokens("cleo:operator:s3:cr:et:expires=2027-01-01T00:00:00Z")
    tokens = Tokens(path, inline, clock=clock)
    assert (
        (json.loads(path.read_text())["tokens"][0]["expires_at"]) == "2027-01-01T00:00:00.000000Z"
    )
    assert tokens.authenticate(lasting).subject == "ada"
    assert tokens.authenticate("s3:cr:et").subject == "cleo"

    clock.advance(seconds=1)
    for expired in (lasting, "s3:cr:et"):
        with pytest.raises(Unauthorized, match="expired") as caught:
            tokens.authenticate(expired)
        assert caught.value.status == 401
    assert tokens.authenticate(forever).subject == "bea"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("ada:operator:tok:expires=tomorrow", "expires"),
        ("ada:operator:tok:expires=2027-01-01T00:00:00", "offset"),
    ],
)
def test_a_malformed_expiry_is_refused(text, complaint):
    with pytest.raises(TokenConfigError, match=complaint):
        parse_inline_tokens(text)
