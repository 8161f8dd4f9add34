"""What to do for an Execution: admit it (resolve, seal, register the run key, create the Job) and
follow its pod to the end, reporting phase, steps, exit code and the masked result.

Admission is idempotent: the run id comes from the Execution's uid and the Job's name from the
Execution's name, so an operator restarted at any point finds what it made instead of making a
second Job. Plaintext exists only in memory here, between the resolution and the sealing.

A failed try with retries left (``domain.retries``) is recorded in ``status.tries`` with the time
of the next (``status.nextTryAt``); the phase stays Running, the Succeeded condition Unknown with
reason Retrying. The next try is admitted as the first was, under its own run id and Job name
(``next_try``, when due); the failed try's Job is kept as history (owned by the Execution, gone
with its time to live), its run closed so its key is refused from then on.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import UTC, datetime
from typing import Any, Protocol

from fx_ef import contract
from fx_ef.bundle import new_run_key, seal_bundle
from fx_ef.run_bundle import BundleChannel, RunBundle
from fx_operator.config import Settings
from fx_operator.domain import api_group, job_spec
from fx_operator.domain.conditions import (
    FAILED,
    FINAL_PHASES,
    Outcome,
    Reason,
    now_iso,
)
from fx_operator.domain.execution_status import (
    STEP_ADMITTED,
    admitted,
    delivered,
    ended,
    missing_message,
    package_ready,
    progress,
    refused_at_admission,
    usable_from_watch,
)
from fx_operator.domain.nesting import too_deep
from fx_operator.domain.package_definition import PackageDefinition
from fx_operator.domain.resources import (
    Execution,
    InvalidResource,
    Package,
    Resource,
    parse,
)
from fx_operator.domain.retries import (
    RetryPolicy,
    awaiting_next_try,
    check_retries,
    current_try,
    try_ended,
    try_to_admit,
)
from fx_operator.domain.secret_needs import MissingSecret, SecretNeeds, find_in_scripts
from fx_operator.exceptions import FxError, ValidationError
from fx_operator.services.metrics import Metrics
from fx_operator.services.packages import PackageService
from fx_operator.services.secret_service import SecretService
from fx_operator.storage.backends import Transaction
from fx_operator.storage.kube import Kube, KubeError, KubeNotFound
from fx_operator.storage.run_keys import RunKeyRecord

log = logging.getLogger(__name__)

#: Writes of a delivery step that may lose to the pod's own progress before one lands.
DELIVERY_WRITE_TRIES = 5


class NotReadyYet(FxError):
    """Something the Execution needs is still being set up; try again shortly."""

    reason = Reason.PACKAGE_NOT_READY
    retry_after = 2.0

    def after_retries(self) -> str:
        return f"{self}, and retrying gave up waiting; create a new Execution"


class PackageNotUsable(FxError):
    """The Package exists but cannot run: its own condition says why."""

    reason = Reason.PACKAGE_NOT_READY


class RunKeys(Protocol):
    """Where one-time run keys are kept until the run's pod claims its own (the broker)."""

    def register(self, run_id: str, namespace: str, execution: str, job_name: str,
                 package: str, key: bytes, allow_platform_write: bool, *,
                 replace: bool = True, tx: Transaction | None = None) -> bool: ...

    def finish(self, run_id: str, *, tx: Transaction | None = None) -> None: ...

    def get(self, run_id: str) -> RunKeyRecord | None: ...


def run_id_of(execution: Resource, try_number: int = 1) -> str:
    return job_spec.run_id(execution.metadata.uid, try_number)


def _status_of(execution: Resource) -> dict[str, Any]:
    """The status as the API spells it (camelCase), for the pure rules over it
    (``domain.retries``, ``progress``) and the patches built from it."""
    return execution.status.model_dump(by_alias=True, exclude_none=True)


class ExecutionService:
    def __init__(self, secrets: SecretService, run_keys: RunKeys, kube: Kube,
                 packages: PackageService, settings: Settings,
                 pod_settings: job_spec.RunPodSettings, *, ca_pem: str,
                 metrics: Metrics | None = None) -> None:
        self.secrets = secrets
        self.run_keys = run_keys
        self.kube = kube
        self.packages = packages
        self.settings = settings
        self.pod_settings = pod_settings
        self.ca_pem = ca_pem
        self._ca_published: set[str] = set()
        self._ca_lock = asyncio.Lock()
        self.metrics = metrics or Metrics()

    # --- admission -------------------------------------------------------------------------

    async def admit(self, body: Execution, package: Package | None = None, *,
                    try_number: int | None = None) -> Outcome | None:
        """Create the run's Job, or nothing when it exists already; None when nothing to do.

        ``package``: the Package as the operator last saw it on its watch, if it did; read from
        the API when missing or not (yet) ready for its generation. ``try_number``: the try to
        admit; default the one the status stands for (none while the next waits for its time).
        """
        meta, spec = body.metadata, body.spec
        namespace, name = meta.namespace, meta.name
        status = _status_of(body)
        if body.status.phase in FINAL_PHASES:
            return None
        number = try_number if try_number is not None else try_to_admit(status)
        if number is None:
            return None  # a failed try's successor waits for its time: ``next_try`` starts it
        run_id = run_id_of(body, number)
        job_name = job_spec.job_name(name, number)
        if (nesting := too_deep(spec.params)) is not None:
            return self._failed(body, Reason.INVALID_SPEC, f"spec.params {nesting}", number)
        if problems := check_retries(spec.retries, "spec.retries"):
            return self._failed(body, Reason.INVALID_SPEC, "; ".join(map(str, problems)), number)
        try:
            definition = await self._package(namespace, spec.package, package)
        except PackageNotUsable as e:
            return self._failed(body, Reason.PACKAGE_NOT_READY, str(e), number)
        except KubeNotFound:
            return self._failed(body, Reason.PACKAGE_NOT_FOUND,
                                f"no Package {spec.package!r} in namespace {namespace}", number)
        # Fixed when the first try is admitted: every later try follows the same policy.
        policy = (RetryPolicy.from_status(status) if status.get("retryPolicy") else
                  RetryPolicy.inherited(spec.retries, definition.retries))
        plan = job_spec.RunPlan(
            namespace=namespace, execution=name, execution_uid=meta.uid,
            package=definition.name, run_id=run_id, entrypoint=definition.entrypoint,
            script_names=tuple(sorted(definition.scripts)), image=definition.image,
            timeout_seconds=spec.timeout_seconds or definition.timeout_seconds,
            resources=definition.resources, try_number=number)
        params = {**definition.params, **spec.params}
        if definition.secrets.all and not self.settings.allow_all_secrets:
            return self._failed(body, Reason.ALL_SECRETS_FORBIDDEN,
                                f"Package {definition.name} asks for every secret of its chain "
                                "(spec.secrets.all), which the operator's configuration forbids "
                                "(allowAllSecrets: false): declare the names in "
                                "spec.secrets.names instead", number)
        needs = self.needs(definition)
        sealed = await asyncio.to_thread(self._register_and_seal, plan, definition, params,
                                         needs, replace=False)
        if sealed is None:
            # Admitted before (a restarted operator, a retry): never a second Job, and a pod
            # started from the earlier Secret must not meet a new key.
            if await self.kube.read_job(namespace, job_name) is not None:
                if body.status.run_id == run_id:
                    return None
                # The operator stopped between creating the Job and writing this status: without
                # the run id in the status the pod's progress would never be followed. Rebuilt
                # from what exists: the Job, and the resolution's audit record of this run.
                manifest = await asyncio.to_thread(self._recorded_manifest, run_id)
                rebuilt = self._admitted(body, plan, policy, manifest,
                                         f"Job {job_name} of run {run_id} found after a "
                                         f"restart of the operator; status rebuilt")
                return await self._caught_up(body, rebuilt)
            sealed = await asyncio.to_thread(self._register_and_seal, plan, definition, params,
                                             needs, replace=True)  # refused once delivered
            assert sealed is not None
        if isinstance(sealed, list):
            return self._failed(body, Reason.SECRET_MISSING, missing_message(sealed), number)
        bundle_b64, manifest = sealed
        await self._publish_ca(namespace)
        created = await self.kube.create_run_objects(
            job_spec.sealed_bundle_secret(plan, bundle_b64),
            job_spec.run_job(plan, self.pod_settings))
        of_tries = f" (try {number} of {policy.max_tries})" if policy.limit else ""
        message = (f"Job {job_name} created for run {run_id}{of_tries} with {len(manifest)} "
                   f"secret(s)" if created else f"Job {job_name} already exists")
        return self._admitted(body, plan, policy, manifest, message)

    async def next_try(self, body: Execution) -> Outcome | None:
        """Admit the try that follows a failed one (its time has come: the caller waited until
        ``status.nextTryAt``); None when no try is waiting. The number comes from the status,
        so an operator restarted before, during or after this makes that one try, once."""
        status = _status_of(body)
        if not awaiting_next_try(status):
            return None
        return await self.admit(body, try_number=current_try(status) + 1)

    def _admitted(self, body: Execution, plan: job_spec.RunPlan, policy: RetryPolicy,
                  manifest: dict[str, Any], message: str) -> Outcome:
        return admitted(_status_of(body), body.metadata.generation, plan.try_number,
                        plan.run_id, plan.job_name, policy, manifest, message)

    async def _caught_up(self, body: Execution, rebuilt: Outcome) -> Outcome:
        """A rebuilt status brought up to its pod's state: the pod's events may all have come
        (and been ignored, the status had no run id yet) before the rebuilt status was written."""
        meta, run_id = body.metadata, rebuilt.status["runId"]
        for pod in await self.kube.run_pods(meta.namespace, run_id):
            later = progress({"metadata": {"generation": meta.generation},
                              "status": rebuilt.status}, pod)
            if later is not None:
                if try_ended(later.status):
                    await asyncio.to_thread(self.run_keys.finish, run_id)
                return Outcome(later.status, [*rebuilt.events, *later.events])
        return rebuilt

    def _recorded_manifest(self, run_id: str) -> dict[str, dict[str, Any]]:
        """In a worker thread: which scope and version of each name the run was sealed with,
        from the audit record of its resolution (no data key ids: the record has none)."""
        resolutions = [r for r in self.secrets.audit_records(run_id=run_id)
                       if r.action == "resolve"]
        if not resolutions:
            return {}
        latest = max(resolutions, key=lambda r: r.at)
        return {str(e["name"]): {"scope": e["scope"], "version": e["version"]}
                for e in sorted(latest.entries, key=lambda e: str(e["name"]))}

    def needs(self, definition: PackageDefinition) -> SecretNeeds:
        """The names runs of ``definition`` receive: declared and found in its scripts."""
        return SecretNeeds.of(definition.secrets, find_in_scripts(definition.scripts),
                              platform_declared_only=self.settings.platform_secrets_declared_only)

    def _register_and_seal(self, plan: job_spec.RunPlan, definition: PackageDefinition,
                           params: dict[str, Any], needs: SecretNeeds, *,
                           replace: bool) -> tuple[str, dict[str, Any]] | list[MissingSecret] \
            | None:
        """In a worker thread: register a new run key, resolve the run's secrets (only the
        names it needs) and seal them under that key; the base64 bundle and the manifest (no
        values). None when the run was registered before and ``replace`` is False; the missing
        required names when some are, the key erased at once (it sealed nothing)."""
        namespace, run_id = plan.namespace, plan.run_id
        allow_platform = self.settings.may_write_platform(namespace, definition.name)
        key = new_run_key()
        with self.secrets.transaction() as tx:
            with self.metrics.timing_store("register-run-key"):
                if not self.run_keys.register(run_id, namespace, plan.execution, plan.job_name,
                                              definition.name, key, allow_platform,
                                              replace=replace, tx=tx):
                    return None
            with self.metrics.timing_store("resolve"):
                resolution = self.secrets.resolve(
                    namespace, definition.name, needs.names, run_id=run_id,
                    actor=f"operator:Execution/{namespace}/{plan.execution}",
                    allowed=needs.allows if needs.restricted else None, tx=tx)
            if missing := needs.missing(resolution.values):
                del resolution, key
                self.run_keys.finish(run_id, tx=tx)
                return missing
        bundle = RunBundle.build(
            run_id=run_id, project=namespace, package=definition.name,
            entrypoint=definition.entrypoint, compat=definition.compat, params=params,
            config=definition.config, secrets=resolution.values,
            scopes={n: e.scope.value for n, e in resolution.manifest.items()},
            channel=BundleChannel(self.settings.broker_url, token_file=contract.POD_TOKEN_FILE,
                                  ca_file=contract.POD_CA_FILE),
            allow_platform_write=allow_platform)
        sealed = base64.b64encode(seal_bundle(bundle, key)).decode()
        manifest = resolution.manifest_dict()
        del bundle, resolution, key  # plaintext lives no longer than needed
        return sealed, manifest

    async def _publish_ca(self, namespace: str) -> None:
        """The broker's CA for the run pods of a namespace, once per namespace and process."""
        if namespace in self._ca_published:
            return
        async with self._ca_lock:  # a burst of first Executions writes it once, not N times
            if namespace not in self._ca_published:
                await self.kube.apply_config_map(job_spec.broker_ca_configmap(
                    namespace, self.pod_settings.broker_ca_configmap, self.ca_pem))
                self._ca_published.add(namespace)

    async def _package(self, namespace: str, name: str,
                       seen: Package | None) -> PackageDefinition:
        try:
            body = seen if seen is not None and usable_from_watch(seen) else \
                parse(Package, await self.kube.get_custom("packages", namespace, name))
        except InvalidResource as e:
            raise PackageNotUsable(str(e)) from None
        ready = package_ready(body)
        if ready is None:
            raise NotReadyYet(f"Package {namespace}/{name} is not published yet")
        if ready.status != "True":
            raise PackageNotUsable(f"Package {name} is not ready ({ready.reason}): "
                                   f"{ready.message}")
        try:
            return self.packages.definition(body)
        except ValidationError as e:
            raise PackageNotUsable(str(e)) from None

    async def not_admitted(self, body: Resource, error: BaseException | None,
                           try_number: int | None = None) -> Outcome:
        """Admission gave up on ``error``: the Execution fails with it (a Failed phase, its
        conditions and a Warning Event) instead of being left without a status.

        The handler decides when: at once after a few tries for a refusal by the API server's
        authorizer (the operator's RBAC), after the last retry for anything else. The run's key,
        if one was registered before the failure, is closed: no Job will ever claim it.
        """
        namespace = body.metadata.namespace
        number = try_number or current_try(_status_of(body))
        run_id = run_id_of(body, number)
        reason = (error.reason if isinstance(error, FxError) else None) or Reason.API_ERROR
        if isinstance(error, KubeError) and error.forbidden:
            message = (f"{error}; the operator's service account is not allowed this call: "
                       f"grant it in the operator's RBAC (its ClusterRole, or its Role in "
                       f"{namespace}), then create a new Execution")
        elif isinstance(error, FxError):
            message = f"admission gave up: {error.after_retries()}"
        else:
            message = f"admission gave up: {error}"
        try:
            await asyncio.to_thread(self.run_keys.finish, run_id)
        except FxError as e:  # never registered, most likely: the store is what failed
            log.warning("run %s not closed after its admission gave up: %s", run_id, e)
        return self._failed(body, reason, message, number)

    def refused(self, body: Resource, error: ValidationError) -> Outcome:
        """An Execution its schema refuses (it slipped past the API server's) fails, naming
        the field: nothing was registered for it."""
        return self._failed(body, error.reason or Reason.INVALID_SPEC, str(error))

    def _failed(self, body: Resource, reason: Reason, message: str,
                try_number: int = 1) -> Outcome:
        return refused_at_admission(_status_of(body), body.metadata.generation, try_number,
                                    run_id_of(body, try_number), reason, message)

    # --- following the run -----------------------------------------------------------------

    async def observe_pod(self, pod: dict[str, Any]) -> tuple[dict[str, Any], Outcome] | None:
        """The Execution's new status from its pod's; None when nothing changed."""
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        name = labels.get(api_group.LABEL_EXECUTION)
        if not name:
            return None
        execution = await self._unfinished(meta["namespace"], name)
        if execution is None:
            return None
        status = execution.get("status") or {}
        if status.get("runId") != labels.get(
                api_group.LABEL_RUN):
            return None
        outcome = progress(execution, pod)
        if outcome is None:
            return None
        if try_ended(outcome.status):  # the Execution's end, or a try's that another follows
            await asyncio.to_thread(self.run_keys.finish, status["runId"])
        if any(e.reason == Reason.SECRETS_DELIVERED for e in outcome.events):
            self._observe_delivery(status)
        return execution, outcome

    async def delivered(self, run_id: str) -> None:
        """The broker handed ``run_id``'s key to its pod: the Execution's delivery step and its
        Event. Called off the pod's path (the key is on its way already); a write that lost to
        another one (the pod's own progress) is decided again on what that one wrote."""
        record = await asyncio.to_thread(self.run_keys.get, run_id)
        if record is None:
            return
        at = now_iso()
        for _ in range(DELIVERY_WRITE_TRIES):
            execution = await self._unfinished(record.namespace, record.execution)
            outcome = delivered(execution, run_id, at) if execution is not None else None
            if execution is None or outcome is None:
                return
            try:
                await self.kube.patch_custom_status(
                    "executions", record.namespace, record.execution, outcome.status,
                    resource_version=execution["metadata"].get("resourceVersion"))
            except KubeError as e:
                if e.status == 409:
                    continue
                raise
            self._observe_delivery(execution.get("status") or {})
            for event in outcome.events:
                await self.kube.post_event(execution, event.type, str(event.reason),
                                           event.message)
            return

    def _observe_delivery(self, status: dict[str, Any]) -> None:
        """Admission to delivery, as the delivery latency users feel at the start of a run."""
        admitted = next((s.get("finishedAt") for s in status.get("steps") or []
                         if s.get("name") == STEP_ADMITTED), None)
        if admitted:
            started = datetime.fromisoformat(str(admitted).replace("Z", "+00:00"))
            self.metrics.delivery.observe((datetime.now(UTC) - started).total_seconds())

    async def forget_run(self, job: dict[str, Any]) -> None:
        """The run's Job is gone (its Execution deleted, or its time to live over): close the
        run, whatever phase it was in, so its key is never handed out after (idempotent)."""
        run_id = ((job.get("metadata") or {}).get("labels") or {}).get(api_group.LABEL_RUN)
        if run_id:
            await asyncio.to_thread(self.run_keys.finish, str(run_id))

    async def _unfinished(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Execution, unless it is gone or already ended (its end is never rewritten)."""
        try:
            execution = await self.kube.get_custom("executions", namespace, name)
        except KubeNotFound:
            return None
        if (execution.get("status") or {}).get("phase") in FINAL_PHASES:
            return None
        return execution

    async def observe_job(self, job: dict[str, Any]) -> tuple[dict[str, Any], Outcome] | None:
        """A Job that failed without its pod saying so (deadline, pod never started)."""
        meta = job.get("metadata") or {}
        name = (meta.get("labels") or {}).get(api_group.LABEL_EXECUTION)
        failed = [c for c in (job.get("status") or {}).get("conditions") or []
                  if c.get("type") == "Failed" and c.get("status") == "True"]
        if not name or not failed:
            return None
        execution = await self._unfinished(meta["namespace"], name)
        if execution is None:
            return None
        status = execution.get("status") or {}
        run_id = (meta.get("labels") or {}).get(api_group.LABEL_RUN)
        if status.get("runId") and (run_id != status["runId"] or try_ended(status)):
            return None  # an earlier try's Job, or the end of this try already recorded
        if run_id:  # the pod's own end, when it has one, says more (its exit code, its output)
            for pod in await self.kube.run_pods(meta["namespace"], str(run_id)):
                said = progress(execution, pod)
                if said is not None and try_ended(said.status):
                    await asyncio.to_thread(self.run_keys.finish, str(run_id))
                    return execution, said
        reason = (Reason.DEADLINE_EXCEEDED if failed[0].get("reason") == "DeadlineExceeded"
                  else Reason.POD_FAILED)
        message = f"Job {meta.get('name')} failed: {failed[0].get('message') or reason}"
        if status.get("runId"):
            await asyncio.to_thread(self.run_keys.finish, status["runId"])
        return execution, ended(execution, FAILED, reason, message, None, None)
