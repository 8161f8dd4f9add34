"""The operator's services, built once at start-up (into kopf's memo) and closed at shutdown."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from fx_operator.config import Settings
from fx_operator.domain import api_group, job_spec
from fx_operator.domain.sealing import PUBLIC_KEY_CONFIGMAP, PUBLIC_KEY_FIELD
from fx_operator.endpoints.broker import BrokerServer, start_broker
from fx_operator.endpoints.metrics_server import MetricsServer
from fx_operator.services.configured_store import open_secret_service
from fx_operator.services.executions import ExecutionService
from fx_operator.services.metrics import Metrics
from fx_operator.services.operator_keys import OperatorKeys, load_or_create_operator_keys
from fx_operator.services.packages import PackageService
from fx_operator.services.run_keys import RunKeyService
from fx_operator.services.runs import RunService
from fx_operator.services.schedules import ScheduleService
from fx_operator.services.scoped_secrets import ScopedSecretService
from fx_operator.services.secret_service import SecretService
from fx_operator.storage.kube import CONNECTIONS, Kube, PodIdentity, load_api_client

log = logging.getLogger(__name__)

CA_FIELD = "ca.crt"


class KubePodAuthenticator:
    """The broker's view of run pods: TokenReview for who, the pod's labels for which run."""

    def __init__(self, kube: Kube, audience: str) -> None:
        self.kube = kube
        self.audience = audience

    async def authenticate(self, token: str) -> PodIdentity | None:
        return await self.kube.review_token(token, self.audience)

    async def pod_run_id(self, namespace: str, pod_name: str, pod_uid: str) -> str | None:
        return await self.kube.pod_run_id(namespace, pod_name, pod_uid)


@dataclass
class OperatorApp:
    settings: Settings
    secrets: SecretService
    kube: Kube
    keys: OperatorKeys
    run_keys: RunKeyService
    packages: PackageService
    scoped_secrets: ScopedSecretService
    executions: ExecutionService
    broker: BrokerServer
    metrics: Metrics
    schedules: ScheduleService
    metrics_server: MetricsServer | None = None

    @classmethod
    async def start(cls, settings: Settings, kube: Kube | None = None) -> OperatorApp:
        # Blocking calls (API client, store) run in worker threads: enough of them for the
        # connections they use, instead of asyncio's default of a few.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(CONNECTIONS, thread_name_prefix="fx-io"))
        secrets = await asyncio.to_thread(open_secret_service, settings)
        kube = kube or Kube(await asyncio.to_thread(load_api_client),
                            timeout=settings.api_timeout_seconds)
        await kube.open()
        dns_names = settings.broker_dns_names or [urlsplit(settings.broker_url).hostname or
                                                  "localhost"]
        keys = await asyncio.to_thread(load_or_create_operator_keys, secrets, dns_names)
        run_keys = RunKeyService(secrets.store, secrets.keys)
        metrics = Metrics()
        packages = PackageService(secrets, kube)
        pod_settings = job_spec.RunPodSettings(
            runtime_image=settings.runtime_image, broker_url=settings.broker_url,
            broker_audience=settings.broker_audience,
            broker_ca_configmap=settings.broker_ca_configmap,
            ttl_seconds_after_finished=settings.job_ttl_seconds)
        executions = ExecutionService(secrets, run_keys, kube, packages, settings, pod_settings,
                                      ca_pem=keys.ca_certificate_pem, metrics=metrics)
        broker = await start_broker(
            host=settings.broker_host, port=settings.broker_port,
            certificate_pem=keys.serving_certificate_pem, private_key_pem=keys.serving_key_pem,
            authenticator=KubePodAuthenticator(kube, settings.broker_audience),
            run_keys=run_keys, runs=RunService(secrets), on_delivered=executions.delivered)
        app = cls(settings, secrets, kube, keys, run_keys, packages,
                  ScopedSecretService(secrets, keys.sealing, settings), executions,
                  broker, metrics, ScheduleService(kube))
        await app.publish_sealing_key()
        if settings.metrics_port:
            app.metrics_server = MetricsServer(metrics.registry, settings.metrics_port)
        log.info("operator started: broker on port %d, sealing key %s", broker.port,
                 keys.sealing.public.key_id)
        return app

    async def publish_sealing_key(self) -> None:
        """The public half, for ``fxctl seal`` users, in the platform namespace."""
        await self.kube.apply_config_map({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": PUBLIC_KEY_CONFIGMAP,
                         "namespace": self.settings.platform_namespace,
                         "labels": {api_group.LABEL_MANAGED_BY: api_group.MANAGER}},
            "data": {PUBLIC_KEY_FIELD: self.keys.sealing.public.export()}})

    async def probe(self) -> str:
        """Readiness: the store answers."""
        await asyncio.to_thread(self.secrets.list, scope=None, project="-probe-")
        return "ok"

    async def stop(self) -> None:
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.close)
        await self.broker.stop()
        await asyncio.to_thread(self.secrets.close)
        await self.kube.close()
