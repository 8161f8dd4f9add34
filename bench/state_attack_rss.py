"""The broker's memory under issue 20's state attack: 80 puts of 900 KB values by one run.

Not a benchmark with a floor: it prints the broker process's resident memory (VmRSS) before and
after the attack, and its peak (VmHWM), with the status of each put. The broker runs in a child
process over a real PostgreSQL with the product's own store and services; only the cluster's
answers (which token is which pod) are faked, as in ``tests/integration/test_broker.py``.

    .venv/bin/python bench/state_attack_rss.py [--puts 80] [--value-bytes 900000]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)

RUN_ID = "run-attack"
TOKEN = "attacker-token"


def _serve(dsn: str, folder: Path) -> None:
    """The child: a broker on the store at ``dsn``; writes its port and CA to ``folder``."""
    from fx_operator.domain import pki
    from fx_operator.domain.crypto import MasterKey
    from fx_operator.endpoints.broker import PodIdentity, start_broker
    from fx_operator.services.run_keys import RunKeyService
    from fx_operator.services.runs import RunService
    from fx_operator.services.secret_service import SecretService
    from fx_operator.storage.secret_store import SecretStore

    class Cluster:
        async def authenticate(self, token: str) -> PodIdentity | None:
            return PodIdentity("team-a", "etl-1", "uid-1", "default") if token == TOKEN else None

        async def pod_run_id(self, namespace: str, pod_name: str, pod_uid: str) -> str | None:
            return RUN_ID

    async def main() -> None:
        service = SecretService(SecretStore.open_postgres(dsn), MasterKey.generate(),
                                actor="bench")
        keys = RunKeyService(service.store, service.keys)
        keys.register(RUN_ID, "team-a", "exec-1", "fx-1", "etl", os.urandom(32), False)
        ca = pki.make_ca()
        serving = pki.make_serving_certificate(ca, ["localhost"], ["127.0.0.1"])
        server = await start_broker(certificate_pem=serving.certificate_pem,
                                    private_key_pem=serving.private_key_pem,
                                    authenticator=Cluster(), run_keys=keys,
                                    runs=RunService(service), host="127.0.0.1", port=0)
        (folder / "ca.crt").write_text(ca.certificate_pem)
        (folder / "port").write_text(str(server.port))
        await asyncio.Event().wait()

    asyncio.run(main())


def _memory_mib(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def _request(port: int, ca_file: Path, method: str, path: str, body: bytes | None) -> int:
    context = ssl.create_default_context(cafile=str(ca_file))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=120)
    headers = {"Authorization": f"Bearer {TOKEN}", "X-FX-Run": RUN_ID,
               "Content-Type": "application/json"}
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _attack(puts: int, value_bytes: int) -> None:
    from support.postgres import PostgresServer

    from fx_ef import contract

    with PostgresServer() as pg, tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        dsn = pg.create_database("attack")
        child = subprocess.Popen([sys.executable, __file__, "--serve", dsn, folder_name])
        try:
            while not (folder / "port").exists():
                if child.poll() is not None:
                    raise SystemExit("the broker did not start")
                time.sleep(0.1)
            port = int((folder / "port").read_text())
            ca_file = folder / "ca.crt"
            assert _request(port, ca_file, "POST", contract.BROKER_KEY_PATH.format(
                run_id=RUN_ID), b"") == 200
            assert _request(port, ca_file, "GET", contract.CHANNEL_STATE_PATH, None) == 200
            before = _memory_mib(child.pid)
            statuses: collections.Counter[int] = collections.Counter()
            for number in range(puts):
                value = f"{number:06d}" + "x" * (value_bytes - 6)
                body = json.dumps({"key": f"blob-{number}", "value": value}).encode()
                statuses[_request(port, ca_file, "POST", contract.CHANNEL_STATE_PATH, body)] += 1
            get_status = _request(port, ca_file, "GET", contract.CHANNEL_STATE_PATH, None)
            after = _memory_mib(child.pid)
        finally:
            child.terminate()
            child.wait(timeout=30)
    print(f"{puts} puts of {value_bytes:,} bytes: statuses {dict(statuses)}, final GET "
          f"{get_status}")
    print(f"broker RSS before {before['VmRSS']:.0f} MiB, after {after['VmRSS']:.0f} MiB, "
          f"peak {after['VmHWM']:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", nargs=2, metavar=("DSN", "FOLDER"))
    parser.add_argument("--puts", type=int, default=80)
    parser.add_argument("--value-bytes", type=int, default=900_000)
    arguments = parser.parse_args()
    if arguments.serve:
        _serve(arguments.serve[0], Path(arguments.serve[1]))
    else:
        _attack(arguments.puts, arguments.value_bytes)
