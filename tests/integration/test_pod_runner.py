"""The pod runner: Jobs in the emulator run as local processes, with kubelet-like statuses.

Each test gets its own emulator (with the project's CRDs) and runner. The containers are tiny
``python -c`` programs, except in the last test, where the Job is the one ``run_job`` builds: the
real init step fetches its run key from a stand-in broker that checks the pod's projected token
with a TokenReview, and the real executor runs a package's script.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import re
import ssl
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fx_operator.domain import api_group, job_spec
from fx_operator.domain.job_spec import RunPlan, RunPodSettings
from kubernetes.client import (
    ApiException,
    AuthenticationV1Api,
    BatchV1Api,
    CoreV1Api,
    CustomObjectsApi,
)
from support.kube_emulator import KubeEmulator, KubeEmulatorServer
from support.pod_runner import DEADLINE, JOB_DELETED, PodRecord, PodRunner
from support.waiting import wait_for

from fx_ef import contract
from fx_ef.bundle import new_run_key, seal_bundle

REPO = Path(__file__).resolve().parents[2]
NS = "runs"
IMAGE = "runner.test/python:3"


# --- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[KubeEmulatorServer]:
    emulator = KubeEmulator()
    emulator.load_crds(REPO / "crds")
    with KubeEmulatorServer(emulator, kubeconfig=tmp_path / "kubeconfig") as server:
        yield server


@pytest.fixture
def api(server: KubeEmulatorServer) -> Iterator[kubernetes.client.ApiClient]:
    client = server.api_client()
    CoreV1Api(client).create_namespace({"metadata": {"name": NS}})
    yield client
    client.close()


@pytest.fixture
def core(api: kubernetes.client.ApiClient) -> CoreV1Api:
    return CoreV1Api(api)


@pytest.fixture
def batch(api: kubernetes.client.ApiClient) -> BatchV1Api:
    return BatchV1Api(api)


@pytest.fixture
def runner(server: KubeEmulatorServer, api: kubernetes.client.ApiClient,
           tmp_path: Path) -> Iterator[PodRunner]:
    with PodRunner(server, workdir=tmp_path / "pods", kill_grace=1.0, retry_delay=0.1) as runner:
        yield runner
    assert runner.errors == []
    assert not (tmp_path / "pods").exists() or not any((tmp_path / "pods").iterdir())


def container(name: str, code: str, *args: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, "command": ["python", "-c", textwrap.dedent(code)],
            "args": list(args), **fields}


def job(name: str, containers: list[dict[str, Any]], *,
        init: list[dict[str, Any]] | None = None, volumes: list[dict[str, Any]] | None = None,
        backoff_limit: int = 0, labels: dict[str, str] | None = None,
        **spec: Any) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": containers,
                                "volumes": volumes or []}
    if init:
        pod_spec["initContainers"] = init
    if "serviceAccountName" in spec:
        pod_spec["serviceAccountName"] = spec.pop("serviceAccountName")
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": backoff_limit, **spec, "template": {
                "metadata": {"labels": labels or {"app": name}}, "spec": pod_spec}}}


def read_pod(core: CoreV1Api, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        core.read_namespaced_pod(name, NS, _preload_content=False).data)
    return found


def pods_of(core: CoreV1Api, job_body: dict[str, Any]) -> list[dict[str, Any]]:
    uid = job_body["metadata"]["uid"]
    listed = json.loads(core.list_namespaced_pod(
        NS, label_selector=f"controller-uid={uid}", _preload_content=False).data)
    items: list[dict[str, Any]] = listed["items"]
    return items


def condition(job_body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (job_body.get("status") or {}).get("conditions") or []
                 if c["type"] == type_), None)


def state(pod_status: dict[str, Any], name: str) -> dict[str, Any]:
    statuses = [*(pod_status.get("initContainerStatuses") or []),
                *(pod_status.get("containerStatuses") or [])]
    found: dict[str, Any] = next((s["state"] for s in statuses if s["name"] == name), {})
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


# --- a Job from start to end ----------------------------------------------------------------------


def test_a_job_runs_its_init_then_its_main_container_like_kubelet_and_controller(
        core: CoreV1Api, batch: BatchV1Api, runner: PodRunner, server: KubeEmulatorServer) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "settings"}, "data": {
        "greeting.txt": "hello", "not-projected.txt": "absent"}})
    init = container("prepare", """
        import pathlib, sys
        pathlib.Path(sys.argv[1], "data.txt").write_text("from init")
        print("init on stdout")
        print("init on stderr", file=sys.stderr)
    """, "/work/shared", volumeMounts=[{"name": "shared", "mountPath": "/work/shared"}])
    main = container("main", """
        import os, sys
        greeting = open(sys.argv[1]).read()
        shared = open(os.environ["SHARED_FILE"]).read()
        print(greeting, shared, sorted(os.listdir(sys.argv[2])))
        with open(os.environ["RESULT"], "w") as f:
            f.write("all good")
    """, "/etc/app/conf/greeting.txt", "/etc/app",
        env=[{"name": "SHARED_FILE", "value": "/work/shared/data.txt"},
             {"name": "RESULT", "value": "/dev/termination-log"},
             {"name": "PLAIN", "value": "unchanged"}],
        volumeMounts=[{"name": "shared", "mountPath": "/work/shared"},
                      {"name": "settings", "mountPath": "/etc/app"}])
    volumes = [{"name": "shared", "emptyDir": {"medium": "Memory"}},
               {"name": "settings", "configMap": {"name": "settings", "items": [
                   {"key": "greeting.txt", "path": "conf/greeting.txt"}]}}]
    created = batch.create_namespaced_job(NS, job("hello", [main], init=[init], volumes=volumes,
                                                  labels={"app": "hello", "team": "a"}))

    done = runner.wait_for_job(NS, "hello")

    status = done["status"]
    assert status["succeeded"] == 1 and "failed" not in status and "active" not in status
    assert status["startTime"] and status["completionTime"]
    assert condition(done, "Complete") is not None and condition(done, "Failed") is None
    [pod] = pods_of(core, done)
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"].startswith("hello-") and len(meta["name"]) == len("hello-") + 5
    assert meta["labels"] == {"app": "hello", "team": "a", "job-name": "hello",
                              "controller-uid": created.metadata.uid,
                              "batch.kubernetes.io/job-name": "hello",
                              "batch.kubernetes.io/controller-uid": created.metadata.uid}
    assert meta["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "hello",
                                        "uid": created.metadata.uid, "controller": True,
                                        "blockOwnerDeletion": True}]
    assert spec["nodeName"] == "pod-runner" and spec["containers"][0]["name"] == "main"
    assert pod["status"]["phase"] == "Succeeded"
    init_end = state(pod["status"], "prepare")["terminated"]
    main_end = state(pod["status"], "main")["terminated"]
    assert (init_end["exitCode"], init_end["reason"]) == (0, "Completed")
    assert (main_end["exitCode"], main_end["reason"], main_end["message"]) == (
        0, "Completed", "all good")
    assert main_end["startedAt"] and main_end["finishedAt"]

    # The kubelet's steps, as the watchers saw them: Pending, the init running, then the main.
    versions = [o["status"] for o in server.dump_objects()
                if o.get("kind") == "Pod" and "status" in o]
    phases = [v["phase"] for v in versions]
    assert phases[0] == "Pending" and "Running" in phases and phases[-1] == "Succeeded"
    assert any("running" in state(v, "prepare") and v["phase"] == "Pending" for v in versions)
    assert any("running" in state(v, "main") and v["phase"] == "Running" for v in versions)

    name = meta["name"]
    assert runner.pods_started == [(NS, name)]
    assert sorted(runner.logs[(NS, name, "prepare")].splitlines()) == [
        "init on stderr", "init on stdout"]  # interleaved as the process flushed them
    assert runner.logs[(NS, name, "main")] == "hello from init ['conf']\n"
    assert [argv[0] for argv in runner.argvs] == [sys.executable, sys.executable]
    assert not any(arg.startswith(("/work/shared", "/etc/app")) for argv in runner.argvs
                   for arg in argv)
    main_env = runner.processes[1].env
    assert main_env["PLAIN"] == "unchanged" and main_env["HOSTNAME"] == name
    assert main_env["SHARED_FILE"].endswith("/data.txt") and "/work/shared" not in main_env[
        "SHARED_FILE"]


def test_a_failing_init_container_fails_the_pod_and_the_job_without_retry(
        core: CoreV1Api, batch: BatchV1Api, runner: PodRunner) -> None:
    init = container("deliver", """
        import sys
        open(sys.argv[1], "w").write("no key for you")
        print("giving up")
        sys.exit(3)
    """, "/dev/termination-log")
    main = container("main", "print('must not run')")
    batch.create_namespaced_job(NS, job("no-key", [main], init=[init]))

    done = runner.wait_for_job(NS, "no-key")

    assert done["status"]["failed"] == 1 and "succeeded" not in done["status"]
    failed = condition(done, "Failed")
    assert failed is not None and failed["reason"] == "BackoffLimitExceeded"
    [pod] = pods_of(core, done)  # backoffLimit 0: no second pod
    assert pod["status"]["phase"] == "Failed"
    end = state(pod["status"], "deliver")["terminated"]
    assert (end["exitCode"], end["reason"], end["message"]) == (3, "Error", "no key for you")
    assert state(pod["status"], "main") == {"waiting": {"reason": "PodInitializing"}}
    name = pod["metadata"]["name"]
    assert runner.logs[(NS, name, "deliver")] == "giving up\n"
    assert (NS, name, "main") not in runner.logs
    assert [record.container for record in runner.processes] == ["deliver"]


def test_a_failing_main_container_is_retried_up_to_the_backoff_limit(
        core: CoreV1Api, batch: BatchV1Api, runner: PodRunner) -> None:
    main = container("main", "import sys; print('boom'); sys.exit(7)",
                     terminationMessagePolicy="FallbackToLogsOnError")
    batch.create_namespaced_job(NS, job("crash", [main], backoff_limit=1))

    done = runner.wait_for_job(NS, "crash")

    assert done["status"]["failed"] == 2
    failed = condition(done, "Failed")
    assert failed is not None and failed["reason"] == "BackoffLimitExceeded"
    pods = pods_of(core, done)
    assert len(pods) == 2
    for pod in pods:
        end = state(pod["status"], "main")["terminated"]
        assert (end["exitCode"], end["reason"], end["message"]) == (7, "Error", "boom")
        assert pod["status"]["phase"] == "Failed"


def test_the_deadline_kills_the_whole_session_and_fails_the_job(
        core: CoreV1Api, batch: BatchV1Api, runner: PodRunner) -> None:
    # The main process ignores SIGTERM (so SIGKILL must follow) and leaves a child in a process
    # group of its own (so killing the main's group alone would miss it).
    main = container("main", """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 process_group=0)
        print(child.pid, flush=True)
        time.sleep(60)
    """)
    batch.create_namespaced_job(NS, job("slow", [main], activeDeadlineSeconds=1))

    done = runner.wait_for_job(NS, "slow")

    failed = condition(done, "Failed")
    assert failed is not None and failed["reason"] == "DeadlineExceeded"
    assert done["status"]["failed"] == 1 and "active" not in done["status"]
    pod = runner.wait_for_pod(NS, "slow")
    assert pod.outcome == DEADLINE and pod.status["phase"] == "Failed"
    end = state(pod.status, "main")["terminated"]
    assert end["exitCode"] == 137 and end["reason"] == "Error"
    child = int(runner.logs[(NS, pod.name, "main")].split()[0])
    assert not alive(child) and not alive(runner.processes[0].pid)
    # The Job controller deletes the pods of a Job past its deadline.
    wait_for(lambda: not pods_of(core, done), "the pod to be deleted")


def test_a_read_only_empty_dir_cannot_be_written_by_the_script(
        core: CoreV1Api, batch: BatchV1Api, runner: PodRunner) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    init = container("writer", """
        import os, sys
        fd = os.open(os.path.join(sys.argv[1], "bundle.json"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b'{"secret": 1}')
        os.close(fd)
    """, "/run/secrets", volumeMounts=[{"name": "secrets", "mountPath": "/run/secrets"}])
    main = container("reader", """
        import json, os, sys
        folder, config = sys.argv[1], sys.argv[2]
        bundle = os.path.join(folder, "bundle.json")
        def attempt(action):
            try:
                action()
                return "allowed"
            except PermissionError:
                return "denied"
        seen = {
            "read": open(bundle).read(),
            "create": attempt(lambda: open(os.path.join(folder, "new"), "w").close()),
            "overwrite": attempt(lambda: open(bundle, "a").close()),
            "delete": attempt(lambda: os.unlink(bundle)),
            "config": attempt(lambda: open(os.path.join(config, "b"), "w").close()),
            "mode": oct(os.stat(bundle).st_mode & 0o777),
        }
        open(os.environ["RESULT"], "w").write(json.dumps(seen))
    """, "/run/secrets", "/etc/cfg", env=[{"name": "RESULT", "value": "/dev/termination-log"}],
        volumeMounts=[{"name": "secrets", "mountPath": "/run/secrets", "readOnly": True},
                      {"name": "cfg", "mountPath": "/etc/cfg"}])
    volumes = [{"name": "secrets", "emptyDir": {"medium": "Memory"}},
               {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 0o444}}]
    batch.create_namespaced_job(NS, job("read-only", [main], init=[init], volumes=volumes))

    done = runner.wait_for_job(NS, "read-only")

    [pod] = pods_of(core, done)
    end = state(pod["status"], "reader")["terminated"]
    assert end["exitCode"] == 0, runner.logs
    assert json.loads(end["message"]) == {
        "read": '{"secret": 1}', "create": "denied", "overwrite": "denied", "delete": "denied",
        "config": "denied", "mode": "0o400"}


def test_the_projected_token_passes_a_token_review_as_the_pod(
        core: CoreV1Api, batch: BatchV1Api, runner: PodRunner,
        api: kubernetes.client.ApiClient) -> None:
    main = container("main", """
        import os, sys
        print(oct(os.stat(sys.argv[1]).st_mode & 0o777), open(sys.argv[1]).read())
    """, "/var/run/fx/token/token",
        volumeMounts=[{"name": "token", "mountPath": "/var/run/fx/token", "readOnly": True}])
    volumes = [{"name": "token", "projected": {"defaultMode": 0o400, "sources": [
        {"serviceAccountToken": {"audience": "fx-broker", "expirationSeconds": 600,
                                 "path": "token"}}]}}]
    batch.create_namespaced_job(NS, job("identity", [main], volumes=volumes,
                                        serviceAccountName="runner-sa"))
    runner.wait_for_job(NS, "identity")
    pod = runner.wait_for_pod(NS, "identity")
    mode, token = runner.logs[(NS, pod.name, "main")].split()
    assert mode == "0o400" and pod.tokens == [token]
    auth = AuthenticationV1Api(api)

    def review(audience: str) -> Any:
        return auth.create_token_review({"spec": {"token": token, "audiences": [audience]}}).status

    seen = review("fx-broker")
    assert seen.authenticated is True and seen.audiences == ["fx-broker"]
    assert seen.user.username == f"system:serviceaccount:{NS}:runner-sa"
    assert seen.user.extra["authentication.kubernetes.io/pod-name"] == [pod.name]
    assert seen.user.extra["authentication.kubernetes.io/pod-uid"] == [pod.uid]
    assert review("kubernetes").authenticated is False  # bound to its audience
    core.delete_namespaced_pod(pod.name, NS)
    assert review("fx-broker").authenticated is False  # and to its pod
    wait_for(lambda: not pod.directory.exists(), "the deleted pod's folder to go")


# --- deletions, pauses, late volumes --------------------------------------------------------------


SLEEPER = "import time; print('started', flush=True); time.sleep(60)"


def running_pod(core: CoreV1Api, runner: PodRunner, job_name: str) -> PodRecord:
    pod = runner.wait_for_pod(NS, job_name)
    wait_for(lambda: "running" in state(read_pod(core, pod.name)["status"], "main"),
             "the main container to run")
    return pod


def test_deleting_a_running_job_kills_its_processes(
        core: CoreV1Api, batch: BatchV1Api, runner: PodRunner) -> None:
    batch.create_namespaced_job(NS, job("doomed", [container("main", SLEEPER)]))
    pod = running_pod(core, runner, "doomed")

    batch.delete_namespaced_job("doomed", NS, propagation_policy="Background")

    assert pod.finished.wait(10) and pod.outcome == JOB_DELETED
    [process] = runner.processes
    assert process.returncode == 128 + 15 and not alive(process.pid)  # SIGTERM was enough
    with pytest.raises(ApiException) as gone:
        read_pod(core, pod.name)  # collected with its Job
    assert gone.value.status == 404


def test_deleting_a_running_pod_kills_it_and_fails_the_job(
        core: CoreV1Api, batch: BatchV1Api, runner: PodRunner) -> None:
    batch.create_namespaced_job(NS, job("evicted", [container("main", SLEEPER)]))
    pod = running_pod(core, runner, "evicted")

    core.delete_namespaced_pod(pod.name, NS)

    done = runner.wait_for_job(NS, "evicted")
    failed = condition(done, "Failed")
    assert failed is not None and failed["reason"] == "BackoffLimitExceeded"
    assert not alive(runner.processes[0].pid)


def test_a_paused_runner_creates_pods_but_starts_nothing(
        core: CoreV1Api, batch: BatchV1Api, runner: PodRunner) -> None:
    runner.paused.set()
    batch.create_namespaced_job(NS, job("later", [container("main", "print('ran')")]))
    pod = runner.wait_for_pod(NS, "later")
    wait_for(lambda: (batch.read_namespaced_job("later", NS).status.active or 0) == 1,
             "the Job to count its active pod")
    time.sleep(0.2)  # the runner had the time to start something, had it been allowed to
    assert read_pod(core, pod.name)["status"]["phase"] == "Pending"
    assert runner.processes == [] and runner.pods_started == []

    runner.paused.clear()

    done = runner.wait_for_job(NS, "later")
    assert condition(done, "Complete") is not None
    assert runner.logs[(NS, pod.name, "main")] == "ran\n"


def test_a_pod_waits_for_a_volume_source_created_later(
        core: CoreV1Api, batch: BatchV1Api, runner: PodRunner) -> None:
    main = container("main", "import sys; print(open(sys.argv[1]).read())", "/cfg/value",
                     volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}])
    volumes = [{"name": "cfg", "secret": {"secretName": "late", "defaultMode": 0o400}}]
    batch.create_namespaced_job(NS, job("patient", [main], volumes=volumes))
    pod = runner.wait_for_pod(NS, "patient")
    wait_for(lambda: pod.waiting_for == f"Secret {NS}/late", "the pod to wait for its Secret")

    core.create_namespaced_secret(NS, {"metadata": {"name": "late"},
                                       "stringData": {"value": "arrived"}})

    runner.wait_for_job(NS, "patient")
    assert runner.logs[(NS, pod.name, "main")] == "arrived\n"


# --- the Job the operator builds ------------------------------------------------------------------


CANARY = "pod-runner-canary-5e1d77"
SCRIPT = """
import os
from fx_ef import context
value = context.secrets.get("CANARY")
print("canary:", value)
print("length:", len(value))
path = os.environ["FX_BUNDLE"]
print("bundle on a filesystem:", not path.startswith("/proc/self/fd/"))
try:
    with open(path, "r+b") as bundle:
        bundle.write(b"{}")
except OSError as e:
    print("bundle written: no,", type(e).__name__)
else:
    print("bundle written: yes")
"""


def self_signed_certificate() -> tuple[bytes, bytes]:
    """A certificate for 127.0.0.1 that is its own CA (the broker's CA ConfigMap holds it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fx-broker.test")])
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@contextlib.contextmanager
def stand_in_broker(server: KubeEmulatorServer, tmp_path: Path, audience: str,
                    keys: dict[str, bytes]) -> Iterator[tuple[str, str, list[Any]]]:
    """The broker's one call (``contract.BROKER_KEY_PATH``): a TokenReview of the caller's token,
    its pod must carry the run's label, and each run's key is given once."""
    certificate, key = self_signed_certificate()
    (tmp_path / "broker.crt").write_bytes(certificate)
    (tmp_path / "broker.key").write_bytes(key)
    reviews: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            run_id = self.path.split("/")[3]
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            with server.api_client() as client:
                seen = AuthenticationV1Api(client).create_token_review(
                    {"spec": {"token": token, "audiences": [audience]}}).status
                reviews.append(seen)
                pod_names = (seen.user.extra or {}).get("authentication.kubernetes.io/pod-name")
                labels: dict[str, str] = {}
                if seen.authenticated and pod_names:
                    pod = CoreV1Api(client).read_namespaced_pod(pod_names[0], NS)
                    labels = pod.metadata.labels or {}
            if labels.get(api_group.LABEL_RUN) != run_id or run_id not in keys:
                self._answer(403, {"error": "not this run's pod, or the key was given"})
                return
            self._answer(200, {"key": base64.b64encode(keys.pop(run_id)).decode()})

        def _answer(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "broker.crt", tmp_path / "broker.key")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}", certificate.decode(), reviews
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_the_job_of_run_job_delivers_the_bundle_and_runs_the_executor(
        core: CoreV1Api, batch: BatchV1Api, runner: PodRunner, server: KubeEmulatorServer,
        api: kubernetes.client.ApiClient, tmp_path: Path) -> None:
    custom = CustomObjectsApi(api)
    group, version = api_group.GROUP, api_group.VERSION
    package = custom.create_namespaced_custom_object(group, version, NS, "packages", {
        "apiVersion": api_group.API_VERSION, "kind": "Package", "metadata": {"name": "pkg"},
        "spec": {"scripts": [{"name": "main.py", "content": SCRIPT}]}})
    execution = custom.create_namespaced_custom_object(group, version, NS, "executions", {
        "apiVersion": api_group.API_VERSION, "kind": "Execution", "metadata": {"name": "pkg-1"},
        "spec": {"package": "pkg"}})
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    plan = RunPlan(namespace=NS, execution="pkg-1", execution_uid=execution["metadata"]["uid"],
                   package="pkg", run_id=run_id, entrypoint="main.py",
                   script_names=("main.py",), timeout_seconds=60)
    key = new_run_key()
    bundle = {"format": contract.BUNDLE_FORMAT, "run_id": run_id,
              "package": {"name": "pkg", "id": f"{NS}/pkg", "project": NS},
              "entrypoint": "main.py", "compat": None, "params": {}, "config": {},
              "secrets": {"CANARY": CANARY}, "scopes": {"CANARY": "package"}, "channel": None,
              "allow_platform_write": False}
    sealed = base64.b64encode(seal_bundle(bundle, key)).decode()

    with stand_in_broker(server, tmp_path, "fx-broker", {run_id: key}) as (url, ca, reviews):
        settings = RunPodSettings(runtime_image=IMAGE, broker_url=url, broker_audience="fx-broker",
                                  broker_ca_configmap="fx-broker-ca")
        core.create_namespaced_config_map(NS, job_spec.scripts_configmap(
            NS, "pkg", package["metadata"]["uid"], {"main.py": SCRIPT}))
        core.create_namespaced_config_map(NS, job_spec.broker_ca_configmap(
            NS, "fx-broker-ca", ca))
        core.create_namespaced_secret(NS, job_spec.sealed_bundle_secret(plan, sealed))
        batch.create_namespaced_job(NS, job_spec.run_job(plan, settings))
        done = runner.wait_for_job(NS, job_spec.job_name("pkg-1"))

    assert condition(done, "Complete") is not None, runner.logs
    pod = runner.wait_for_pod(NS, job_spec.job_name("pkg-1"))
    [seen] = reviews
    assert seen.authenticated and seen.audiences == ["fx-broker"]
    assert seen.user.username == f"system:serviceaccount:{NS}:default"
    assert seen.user.extra["authentication.kubernetes.io/pod-uid"] == [pod.uid]
    output = runner.logs[(NS, pod.name, job_spec.SCRIPT_CONTAINER)]
    assert re.search(rf"bundle of run {run_id} delivered in \d+ ms \(held in memory\)", output)
    assert "bundle on a filesystem: False" in output  # a sealed memory file, on no disk
    assert "bundle written: no, PermissionError" in output  # sealed: no one writes it
    assert "canary: ***" in output and f"length: {len(CANARY)}" in output
    end = state(read_pod(core, pod.name)["status"], job_spec.SCRIPT_CONTAINER)["terminated"]
    result = json.loads(end["message"])
    assert result["exit_code"] == 0 and result["run_id"] == run_id
    assert "canary: ***" in result["output_tail"]
    assert result["bundle_removed"] is True  # a sealed memory file: closed, it is gone
    (script_argv,) = runner.argvs  # one container: the executor delivered the bundle itself
    assert script_argv[:3] == [sys.executable, "-m", "fx_ef.executor"]
    assert os.path.basename(script_argv[script_argv.index("--sealed") + 1]) == "bundle"
    everything = "\n".join([json.dumps(server.dump_objects(), default=str),
                            *runner.logs.values(), *(" ".join(a) for a in runner.argvs),
                            *(json.dumps(p.env) for p in runner.processes)])
    assert CANARY not in everything


def test_a_run_pod_whose_key_is_refused_ends_saying_why(
        core: CoreV1Api, batch: BatchV1Api, runner: PodRunner, server: KubeEmulatorServer,
        api: kubernetes.client.ApiClient, tmp_path: Path) -> None:
    """The executor delivers or the script never starts: a refused key ends the pod with exit 4
    and ``delivery_error`` in its termination message, which the operator reports."""
    custom = CustomObjectsApi(api)
    execution = custom.create_namespaced_custom_object(
        api_group.GROUP, api_group.VERSION, NS, "executions", {
            "apiVersion": api_group.API_VERSION, "kind": "Execution",
            "metadata": {"name": "refused-1"}, "spec": {"package": "pkg"}})
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    plan = RunPlan(namespace=NS, execution="refused-1",
                   execution_uid=execution["metadata"]["uid"], package="pkg", run_id=run_id,
                   entrypoint="main.py", script_names=("main.py",), timeout_seconds=60)
    sealed = base64.b64encode(b"\x01" + bytes(60)).decode()  # never opened: no key is given
    with stand_in_broker(server, tmp_path, "fx-broker", {}) as (url, ca, _):
        settings = RunPodSettings(runtime_image=IMAGE, broker_url=url, broker_audience="fx-broker",
                                  broker_ca_configmap="fx-broker-ca")
        core.create_namespaced_config_map(NS, job_spec.scripts_configmap(
            NS, "pkg", "uid-pkg", {"main.py": "print('never runs')\n"}))
        core.create_namespaced_config_map(NS, job_spec.broker_ca_configmap(
            NS, "fx-broker-ca", ca))
        core.create_namespaced_secret(NS, job_spec.sealed_bundle_secret(plan, sealed))
        batch.create_namespaced_job(NS, job_spec.run_job(plan, settings))
        done = runner.wait_for_job(NS, plan.job_name)
    assert condition(done, "Failed") is not None, runner.logs
    pod = runner.wait_for_pod(NS, plan.job_name)
    end = state(read_pod(core, pod.name)["status"], job_spec.SCRIPT_CONTAINER)["terminated"]
    assert end["exitCode"] == 4
    assert "the broker refused the run key" in json.loads(end["message"])["delivery_error"]
    assert "never runs" not in runner.logs[(NS, pod.name, job_spec.SCRIPT_CONTAINER)]
