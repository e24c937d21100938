"""``--tls-cert/--tls-key``: the server speaks HTTPS (a self-signed certificate made with the
openssl command), and then may listen beyond loopback once a token exists."""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from ferry import Orchestrator, errors
from ferry.serve import ServiceServer, TokenStore


@pytest.fixture
def cert(tmp_path: Path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    crt, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        check=True,
        capture_output=True,
    )
    return str(crt), str(key)


def test_https_with_a_token(orch: Orchestrator, cert: tuple[str, str]) -> None:
    crt, key = cert
    with pytest.raises(errors.ConfigError, match="no API token"):
        ServiceServer(orch, "0.0.0.0:0", tls_cert=crt, tls_key=key)
    _, token = TokenStore(orch.db).create("ops", "reader")
    with ServiceServer(orch, "0.0.0.0:0", tls_cert=crt, tls_key=key) as server:
        assert server.url.startswith("https://")
        context = ssl.create_default_context(cafile=crt)
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=30)
        try:
            conn.request("GET", "/api/v1/hosts", headers={"Authorization": f"Bearer {token}"})
            reply = conn.getresponse()
            assert reply.status == 200 and json.loads(reply.read())
        finally:
            conn.close()


def test_bad_tls_options(orch: Orchestrator, tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="both"):
        ServiceServer(orch, "127.0.0.1:0", tls_cert="cert.pem")
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(errors.ConfigError, match="cannot load the TLS certificate"):
        ServiceServer(orch, "127.0.0.1:0", tls_cert=str(bogus), tls_key=str(bogus))


def test_a_port_in_use_is_one_error(orch: Orchestrator) -> None:
    with (
        ServiceServer(orch, "127.0.0.1:0") as server,
        pytest.raises(errors.ConfigError, match=r"cannot listen on 127\.0\.0\.1"),
    ):
        ServiceServer(orch, f"127.0.0.1:{server.port}")
