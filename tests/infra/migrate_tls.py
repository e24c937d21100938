"""Certificates for QEMU's native TLS migration on the test hosts (tests/infra/libvirt_hosts.py).

One CA per hosts directory and, per host set up for TLS, the five files QEMU loads from its
``migrate_tls_x509_cert_dir``: ``ca-cert.pem``, ``server-cert.pem`` / ``server-key.pem`` (the
destination's side: subjectAltName = the host's name and address, which the source checks) and
``client-cert.pem`` / ``client-key.pem`` (the source's side: the destination verifies it, as
libvirt's default ``migrate_tls_x509_verify = 1`` asks). EC P-256 keys, made with the openssl
command (instant; no Python dependency). Tests only: the CA key stays next to the certificates.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

DAYS = "30"
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def available() -> bool:
    return shutil.which("openssl") is not None


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()[-400:]}")


def make_ca(directory: Path) -> Path:
    """The CA (``ca-cert.pem``, ``ca-key.pem``) in ``directory``; made once."""
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "ca-cert.pem").exists():
        _openssl(
            "req", "-x509", *_EC, "-keyout", "ca-key.pem", "-out", "ca-cert.pem",
            "-days", DAYS, "-subj", "/CN=ferry test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=directory,
        )  # fmt: skip
    return directory


def make_host(ca: Path, directory: Path, name: str, ip: str) -> None:
    """The host's server and client certificates, signed by ``ca``, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca / "ca-cert.pem", directory / "ca-cert.pem")
    for role, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        ext = directory / f"{role}.ext"
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={usage}\n"
            f"subjectAltName=DNS:{name},IP:{ip}\n"
        )
        _openssl(
            "req", *_EC, "-keyout", f"{role}-key.pem", "-out", f"{role}.csr",
            "-subj", f"/O=ferry tests/CN={name}", cwd=directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{role}.csr", "-CA", str(ca / "ca-cert.pem"),
            "-CAkey", str(ca / "ca-key.pem"), "-CAcreateserial", "-days", DAYS,
            "-out", f"{role}-cert.pem", "-extfile", ext.name, cwd=directory,
        )  # fmt: skip
        (directory / f"{role}.csr").unlink()
        ext.unlink()
