"""TLS for the security battery: test certificates and a redis-server that speaks only TLS.

The certificates come from the ``openssl`` command line (the ``cryptography`` package is
not a dependency): a CA, and a server certificate for ``127.0.0.1`` (an IP SAN) that
the CA signs.  :class:`TlsRedisServer` listens on one TLS port and no plain one, so a
client that forgets TLS meets a server that cannot understand it.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from runstream.redis_server import RedisServer, free_port

__all__ = ["Certificates", "TlsRedisServer", "find_redis_server", "make_certificates"]


@functools.cache
def find_redis_server(minimum: tuple[int, int] = (7, 0)) -> str | None:
    """The first ``redis-server`` on PATH (or Debian's) at least ``minimum`` (a Python venv
    may put an older bundled one first), or None."""
    folders = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]
    for candidate in (str(Path(f) / "redis-server") for f in folders if f):
        if not os.access(candidate, os.X_OK):
            continue
        done = subprocess.run([candidate, "--version"], capture_output=True, text=True, check=False, timeout=10)
        found = re.search(r"v=(\d+)\.(\d+)", done.stdout)
        if found and (int(found[1]), int(found[2])) >= minimum:
            return candidate
    return None


@dataclass(frozen=True)
class Certificates:
    """PEM files: the CA's certificate, and the server's certificate and key."""

    ca: Path
    server_cert: Path
    server_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr[-1000:]}")


def make_certificates(folder: Path) -> Certificates:
    """A fresh CA and a server certificate for 127.0.0.1 in ``folder`` (P-256 keys, 2 days)."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    subject = ("-subj", "/CN=runstream test CA")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", *subject, cwd=folder)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "server.ext", cwd=folder,
    )  # fmt: skip
    return Certificates(folder / "ca.crt", folder / "server.crt", folder / "server.key")


class TlsRedisServer(RedisServer):
    """A ``redis-server`` with a TLS port only (``--port 0``); clients need not present
    a certificate (``--tls-auth-clients no``), but must trust the test CA."""

    def __init__(self, certificates: Certificates, folder: Path | None = None, executable: str | None = None) -> None:
        port = free_port()
        tls = (
            "--port", "0",  # no plain port: it overrides the --port the base class gives first
            "--tls-port", str(port),
            "--tls-cert-file", str(certificates.server_cert),
            "--tls-key-file", str(certificates.server_key),
            "--tls-ca-cert-file", str(certificates.ca),
            "--tls-auth-clients", "no",
        )  # fmt: skip
        super().__init__(folder, port=port, args=tls, executable=executable)
        self.certificates = certificates

    @property
    def url(self) -> str:
        """``rediss://`` with the CA to trust as redis-py reads it from the query."""
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.certificates.ca), safe='/')}"

    @property
    def plain_url(self) -> str:
        """The same port without TLS: what a client that forgot ``rediss://`` would use."""
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        """Whether the server answers PING over TLS now."""
        context = ssl.create_default_context(cafile=str(self.certificates.ca))
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
            ):
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
