"""A pod's ``status`` as a kubelet writes it: phase, conditions, container states.

Operators read a run's outcome from these fields (phase, exit codes, termination messages), so
they are written through ``/status`` in the kubelet's shape at every step of the pod's life.
"""

from __future__ import annotations

from collections.abc import Mapping

from kubernetes.client import ApiException, CoreV1Api

from support.runner.records import (
    FAILED,
    NODE_IP,
    POD_DELETED,
    STOPPED,
    SUCCEEDED,
    JsonDict,
    PodRecord,
    utc_now,
)


def push_status(core: CoreV1Api, pod: PodRecord) -> None:
    """Write the pod's status through ``/status``, as a kubelet does (a gone pod is fine)."""
    pod.status = pod_status(pod)
    if pod.deleted or pod.reason in (STOPPED, POD_DELETED):
        return
    try:
        core.patch_namespaced_pod_status(pod.name, pod.namespace, {"status": pod.status},
                                         _preload_content=False)
    except ApiException as exc:
        if exc.status != 404:
            raise


def pod_status(pod: PodRecord) -> JsonDict:
    inits = pod.spec.get("initContainers") or []
    mains = pod.spec.get("containers") or []
    waiting_reason = "ContainerCreating"
    if pod.start_error:
        waiting_reason = "CreateContainerConfigError"
    elif inits:
        waiting_reason = "PodInitializing"

    def status_of(container: JsonDict, kind: str, reason: str) -> JsonDict:
        waiting: JsonDict = {"reason": reason}
        if pod.start_error:
            waiting["message"] = pod.start_error
        state = pod.states.get((kind, container["name"])) or {"waiting": waiting}
        running = "running" in state
        found: JsonDict = {"name": container["name"], "image": container.get("image", ""),
                           "imageID": "", "ready": running, "started": running,
                           "restartCount": 0, "state": state, "lastState": {}}
        terminated = state.get("terminated") or {}
        if terminated.get("containerID"):
            found["containerID"] = terminated["containerID"]
        return found

    init_statuses = [status_of(c, "init", "PodInitializing" if not pod.start_error
                               else waiting_reason) for c in inits]
    main_statuses = [status_of(c, "main", waiting_reason) for c in mains]
    initialized = all((s["state"].get("terminated") or {}).get("exitCode") == 0
                      for s in init_statuses)
    ready = bool(main_statuses) and all("running" in s["state"] for s in main_statuses)
    status: JsonDict = {
        "phase": pod.phase, "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}],
        "podIP": NODE_IP, "podIPs": [{"ip": NODE_IP}], "startTime": pod.start_time,
        "qosClass": "BestEffort",
        "conditions": pod_conditions(pod, {"PodScheduled": True, "Initialized": initialized,
                                             "ContainersReady": ready, "Ready": ready}),
        "containerStatuses": main_statuses,
    }
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    return status


def pod_conditions(pod: PodRecord, wanted: Mapping[str, bool]) -> list[JsonDict]:
    conditions: list[JsonDict] = []
    for type_, ok in wanted.items():
        previous = pod._conditions.get(type_)
        if previous is None or previous[0] != ok:
            pod._conditions[type_] = (ok, utc_now())
        condition: JsonDict = {"type": type_, "status": "True" if ok else "False",
                               "lastTransitionTime": pod._conditions[type_][1]}
        if not ok and type_ == "Initialized":
            condition["reason"] = "ContainersNotInitialized"
        elif not ok:
            condition["reason"] = ("PodCompleted" if pod.phase in (SUCCEEDED, FAILED)
                                   else "ContainersNotReady")
        conditions.append(condition)
    return conditions
