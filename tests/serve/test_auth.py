"""Bearer tokens: 401 without a valid one, 403 for a reader's write, revocation, only a salted
hash stored, tokens never in logs or errors; the listen address's safety checks."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ferry import Orchestrator, errors
from ferry.cli import cli
from ferry.serve import ServiceServer, TokenStore, check_listen
from tests.serve.conftest import Service
from tests.serve.helpers import call


def test_no_token_unknown_token_and_reader_write(service: Service, orch: Orchestrator) -> None:
    url = service.url
    for path in ("/api/v1/migrations", "/api/v1/hosts", "/metrics", "/api/v1/events"):
        reply = call(url, "GET", path)
        assert reply.status == 401 and reply.headers["www-authenticate"].startswith("Bearer")
        assert reply.json["error"]["code"] == "Unauthorized"
    forged = service.reader[:-4] + "AAAA"
    assert call(url, "GET", "/api/v1/migrations", token=forged).status == 401
    assert call(url, "GET", "/api/v1/migrations", token="not-a-token").status == 401
    basic = call(url, "GET", "/api/v1/migrations", headers={"Authorization": "Basic eDp5"})
    assert basic.status == 401
    write = call(
        url, "POST", "/api/v1/migrations", token=service.reader, body={"instance": "web-1"}
    )
    assert write.status == 403 and write.json["error"]["code"] == "Forbidden"
    assert orch.list() == []  # nothing made
    assert call(url, "GET", "/api/v1/migrations", token=service.reader).status == 200
    assert call(url, "GET", "/api/v1/openapi.json").status == 200  # the document is public


def test_revoked_token_is_refused(service: Service, orch: Orchestrator) -> None:
    tokens = TokenStore(orch.db)
    assert call(service.url, "GET", "/api/v1/hosts", token=service.reader).status == 200
    tokens.revoke("dash")
    assert call(service.url, "GET", "/api/v1/hosts", token=service.reader).status == 401
    assert [t.name for t in tokens.list() if t.active] == ["ops"]


def test_tokens_never_in_logs_records_or_errors(
    service: Service, orch: Orchestrator, caplog: pytest.LogCaptureFixture, db_url: str
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = service.operator[:-1] + ("A" if service.operator[-1] != "A" else "B")
    replies = [
        call(
            service.url,
            "POST",
            "/api/v1/migrations",
            token=service.operator,
            body={"instance": "web-1"},
        ),
        call(service.url, "POST", "/api/v1/migrations", token=bad, body={"instance": "web-2"}),
    ]
    service.finished.wait(replies[0].json["id"])
    secrets = (service.operator, service.reader, bad)
    texts = [caplog.text, *(r.text for r in replies)]
    texts += [str(m.to_dict()) for m in orch.list()]
    for text in texts:
        for secret in secrets:
            assert secret.split("_")[-1] not in text
    raw = Path(db_url.removeprefix("sqlite:///")).read_bytes()
    assert service.operator.split("_")[-1].encode() not in raw  # only the salted hash is kept


def test_token_cli_prints_once_lists_and_revokes(tmp_path: Path) -> None:
    env = {"FERRY_DB": f"sqlite:///{tmp_path / 't.db'}"}
    runner = CliRunner()
    made = runner.invoke(cli, ["token", "create", "--name", "ci", "--role", "operator"], env=env)
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert re.fullmatch(r"ferry_[0-9a-f]{12}_[A-Za-z0-9_-]+", token)
    listed = runner.invoke(cli, ["token", "list", "--json"], env=env)
    assert token not in listed.stdout and '"name": "ci"' in listed.stdout
    dup = runner.invoke(cli, ["token", "create", "--name", "ci", "--role", "reader"], env=env)
    assert dup.exit_code == 2 and "exists already" in dup.stderr
    gone = runner.invoke(cli, ["token", "revoke", "ci"], env=env)
    assert gone.exit_code == 0
    listed = runner.invoke(cli, ["token", "list"], env=env)
    assert "revoked" in listed.stdout
    role = runner.invoke(cli, ["token", "create", "--name", "x", "--role", "admin"], env=env)
    assert role.exit_code == 2


def test_listen_checks() -> None:
    check_listen("127.0.0.1", tls=False, has_tokens=False, insecure=False)
    check_listen("::1", tls=False, has_tokens=False, insecure=False)
    with pytest.raises(errors.ConfigError, match="without TLS"):
        check_listen("0.0.0.0", tls=False, has_tokens=True, insecure=False)
    with pytest.raises(errors.ConfigError, match="no API token"):
        check_listen("10.0.0.5", tls=True, has_tokens=False, insecure=False)
    check_listen("0.0.0.0", tls=True, has_tokens=True, insecure=False)
    check_listen("0.0.0.0", tls=False, has_tokens=False, insecure=True)


def test_serve_refuses_a_public_address_with_one_line(tmp_path: Path) -> None:
    env = {"FERRY_DB": f"sqlite:///{tmp_path / 's.db'}"}
    result = CliRunner().invoke(cli, ["serve", "--listen", "0.0.0.0:0"], env=env)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "refusing to listen on 0.0.0.0" in result.stderr


def test_pages_need_a_token_beyond_loopback(orch: Orchestrator) -> None:
    tokens = TokenStore(orch.db)
    _, reader = tokens.create("dash", "reader")
    with ServiceServer(orch, "0.0.0.0:0", insecure=True, poll_seconds=0.05) as server:
        url = f"http://127.0.0.1:{server.port}"
        assert call(url, "GET", "/").status == 401
        assert call(url, "GET", "/", token=reader).status == 200
