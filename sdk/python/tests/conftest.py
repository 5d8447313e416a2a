"""A standalone trustmesh mesh for the test session: the real `trustmesh standalone` binary (built
with `cargo build -p trustmesh-cli` unless `$TRUSTMESH_BIN` names one), its own database on the
dev Postgres (`$TRUSTMESH_TEST_DATABASE_URL`, from `infra/dev/up.sh`), its own nats-server child,
loopback plaintext on free ports; stopped (SIGTERM) and its database dropped at the end.
"""

import os
import re
import secrets
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import grpc
import pytest

import trustmesh

REPO = Path(__file__).resolve().parents[3]
DEFAULT_DATABASE = "postgres://postgres:postgres@127.0.0.1:5432/postgres"


def _binary() -> Path:
    if os.environ.get("TRUSTMESH_BIN"):
        return Path(os.environ["TRUSTMESH_BIN"])
    subprocess.run(["cargo", "build", "-p", "trustmesh-cli"], cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug" / "trustmesh"


def _database_url(name: str) -> str:
    server = urlparse(os.environ.get("TRUSTMESH_TEST_DATABASE_URL", DEFAULT_DATABASE))
    return urlunparse(server._replace(path=f"/{name}"))


class Mesh:
    """A running standalone mesh: its endpoint and an operator client."""

    def __init__(self, process: subprocess.Popen, endpoint: str, operator_credential: str):
        self.process = process
        self.endpoint = endpoint
        self.operator = trustmesh.Client(endpoint, operator_credential)

    def tenant(self, tenant: str, scopes=("admin",)) -> trustmesh.Client:
        """A new tenant and a client holding a fresh key of it (once the mesh knows the key)."""
        _, secret = self.operator.create_tenant_with_key(tenant, tenant, scopes)
        client = trustmesh.Client(self.endpoint, secret, tenant=tenant)
        # Keys reach every service's cache through NATS KV, shortly after they are created: wait
        # until ingest, analysis and trust-scoring know it (a missing resource, not a bad key).
        absent = "0190b2c4-0000-7000-8000-000000000000"
        deadline = time.monotonic() + 30
        for probe in (client.get_dataset, client.get_job, client.get_report):
            while True:
                try:
                    probe(absent)
                except trustmesh.TrustmeshError as error:
                    if error.code != grpc.StatusCode.UNAUTHENTICATED:
                        break
                    if time.monotonic() > deadline:
                        raise
                else:
                    break
                time.sleep(0.1)
        return client


@pytest.fixture(scope="session")
def mesh(tmp_path_factory):
    binary = _binary()
    data_dir = tmp_path_factory.mktemp("mesh")
    database = f"trustmesh_pytest_{secrets.token_hex(4)}"
    log = open(data_dir / "standalone.log", "w")
    process = subprocess.Popen(
        [
            str(binary),
            "standalone",
            "--grpc-bind",
            "127.0.0.1:0",
            "--admin-bind",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir / "data"),
            "--database-url",
            _database_url(database),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "TRUSTMESH_OPERATOR_CREDENTIAL"},
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"grpc=(\S+) admin=(\S+)", line)
        if match is None:
            process.wait(timeout=10)
            raise RuntimeError(
                f"trustmesh standalone did not start ({line!r}); see {data_dir / 'standalone.log'}"
            )
        grpc_addr, admin_addr = match.groups()
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://{admin_addr}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the standalone mesh did not become ready within 120 s")
            time.sleep(0.2)
        credential = (data_dir / "data" / "operator-credential").read_text().strip()
        yield Mesh(process, f"http://{grpc_addr}", credential)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        _drop(database)


def _drop(database: str) -> None:
    """Drops the session's database (best effort: psql may be missing)."""
    server = os.environ.get("TRUSTMESH_TEST_DATABASE_URL", DEFAULT_DATABASE)
    try:
        subprocess.run(
            ["psql", server, "-qc", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'],
            check=False,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        pass
