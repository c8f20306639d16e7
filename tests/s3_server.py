"""An S3-compatible server for tests: moto's standalone server on a loopback port.

A process of its own, never moto's in-process mocks, so the bytes cross a real socket.
The fixtures ``s3`` (the server, and the ``AWS_*`` variables that name it, as a
deployment sets them) and ``bucket`` (a bucket of the test's own) are imported by the
test modules that use them.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import boto3  # type: ignore[import-untyped]  # boto3-stubs is not among the dev dependencies
import pytest

from runstream.redis_server import free_port
from tests.conftest import wait_until

__all__ = ["DUMMY_KEY", "S3Server", "bucket", "s3"]

#: moto takes any key id and secret: these are the dummies a local S3 server's docs use.
DUMMY_KEY: Final = "test"
#: Variables that would point the store elsewhere than the test's server, or lend it other credentials.
_OTHER_AWS: Final = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_BUCKET",
    "AWS_BUCKET_NAME",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
    "RUNSTREAM_ARCHIVE_URL",
    "RUNSTREAM_ARTIFACTS_URL",
)


class S3Server:
    """moto's S3 server on a loopback port of its own.

    :meth:`stop` kills it as a crash or a network cut would; :meth:`start` brings it back
    on the same port, so the stores already built reach it again, but empty: moto keeps
    its buckets in memory.
    """

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        wait_until(self._answers, 30, "moto's S3 server answering")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(30)
            self.process = None

    def _answers(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
        try:
            connection.request("GET", "/")
            connection.getresponse().read()  # any answer will do: it is an HTTP server, listening
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()
        return True

    def client(self) -> Any:
        """A boto3 S3 client of the server (boto3 ships no annotations)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=DUMMY_KEY,
            aws_secret_access_key=DUMMY_KEY,
            region_name="us-east-1",
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def object_names(self, bucket: str) -> set[str]:
        """Every object's key in ``bucket`` (a few hundred at most here: no paging)."""
        listing = self.client().list_objects_v2(Bucket=bucket)
        assert not listing["IsTruncated"]
        return {str(entry["Key"]) for entry in listing.get("Contents", [])}


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """A running S3 server, and the ``AWS_*`` variables that name it (as a deployment would set them)."""
    server = S3Server(tmp_path / "moto.log")
    for name in _OTHER_AWS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(s3: S3Server) -> str:
    """A bucket of this test's own: the readers' stores are kept per URL for the process's life,
    so no two tests may share a URL (each test's server has another port)."""
    name = f"rs-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(name)
    return name
