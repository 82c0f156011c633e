"""Session fixture: a real `alignet dev` (Postgres, in-process broker, API,
persister, trainer) built from this repository and run on free ports with
a temporary data directory."""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Iterator

import httpx
import pytest

import alignet

REPO = os.environ.get("ALIGNET_REPO") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
THINGS = os.path.join(REPO, "..", "shared", "data", "things")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A running alignet dev."""

    def __init__(self, url: str, key: str, pg_url: str, brokers: str, log: str):
        self.url, self.key, self.pg_url, self.brokers, self.log = url, key, pg_url, brokers, log

    def psql(self, sql: str) -> str:
        """Runs SQL on the server's database (test glue only)."""
        found = shutil.which("psql") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))), None)
        assert found, "psql is needed (it comes with the Postgres that alignet dev runs)"
        out = subprocess.run([found, self.pg_url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                             capture_output=True, text=True, check=True)
        return out.stdout


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    tmp = tempfile.mkdtemp(prefix="alignet-pytest-")
    os.chmod(tmp, 0o755)
    binary = os.path.join(tmp, "alignet")
    subprocess.run(["go", "build", "-o", binary, "./cmd/alignet"], cwd=REPO, check=True)
    data = os.path.join(tmp, "data")
    listen = f"127.0.0.1:{free_port()}"
    kafka = free_port()
    log_path = os.path.join(tmp, "dev.log")
    log = open(log_path, "w")
    # The tests store teacher versions themselves, as the learner would, so
    # dev runs without the learner: it would add states and versions of its own.
    proc = subprocess.Popen([binary, "dev", "--data-dir", data, "--listen", listen, "--pg-port", str(free_port()),
                             "--kafka-port", str(kafka), "--roles", "api,persister,trainer"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    url = "http://" + listen
    try:
        deadline = time.monotonic() + 180
        key_path = os.path.join(data, "admin.key")
        while True:
            if proc.poll() is not None:
                raise RuntimeError("alignet dev exited:\n" + open(log_path).read()[-4000:])
            if os.path.exists(key_path):
                key = open(key_path).read().strip()
                try:
                    if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError("alignet dev did not start:\n" + open(log_path).read()[-4000:])
            time.sleep(0.2)
        m = re.search(r"Postgres\s+(postgres://\S+)", open(log_path).read())
        assert m, "dev did not print its Postgres URL"
        yield Server(url, key, m.group(1), f"127.0.0.1:{kafka}", log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture()
def client(server: Server) -> Iterator[alignet.Client]:
    with alignet.Client(server.url, server.key, progress=False) as c:
        yield c
