"""An API server in trouble, on demand: the emulator holding or failing the requests a test picks.

:class:`FaultyEmulator` is the :class:`~support.kube_emulator.KubeEmulator` with a
:class:`FaultSwitch` in front of it. The switch is set from the test's thread while the server
serves from its own; each rule picks requests by their :class:`~support.kube_emulator.ApiCall`
(token, verb, resource...) and decides what happens to them *before* the emulator sees them, so a
faulted request changes nothing:

* :meth:`FaultSwitch.hold` — the request waits (as if the server were slow at that step) until
  :meth:`Hold.release`, then is answered 503 without effect: a client killed meanwhile never gets
  its write through, which is what pins a process "just before" a step;
* :meth:`FaultSwitch.fail` — the requests are answered, in turn, with the failures given: a 500,
  a 429 with ``Retry-After`` (the API server's priority and fairness), or a 504 after a stall (the
  API server's own request timeout, ``Timeout: request did not complete``);
* :meth:`FaultSwitch.clear` — every rule off; held requests are released;
  :meth:`FaultSwitch.stop` — every rule off, held requests left hanging (a black hole).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import aiohttp.web
import attrs
import kmock

from support.kube_emulator import ApiCall, KubeEmulator

Matcher = Callable[[ApiCall], bool]


@dataclasses.dataclass(frozen=True)
class Failure:
    """One way the API server fails a request: its status, ``Retry-After``, and how long the
    request hangs before the answer (a timeout's stall)."""

    status: int
    reason: str
    message: str
    retry_after: int | None = None
    stall: float = 0.0


INTERNAL_ERROR = Failure(500, "InternalError", "an error on the server (\"etcdserver: leader "
                                               "changed\") has prevented the request from "
                                               "succeeding")
TOO_MANY_REQUESTS = Failure(429, "TooManyRequests", "too many requests, please try again later",
                            retry_after=1)


def timeout(stall: float) -> Failure:
    """The API server's own answer to a request that took longer than its request timeout."""
    return Failure(504, "Timeout", "Timeout: request did not complete within the allotted "
                                   "timeout", stall=stall)


class Hold:
    """Requests that wait until released; ``arrived`` counts them (from any thread)."""

    def __init__(self, matches: Matcher) -> None:
        self.matches = matches
        self._released = threading.Event()
        self._arrived: list[ApiCall] = []
        self._lock = threading.Lock()

    @property
    def arrived(self) -> int:
        with self._lock:
            return len(self._arrived)

    def release(self) -> None:
        self._released.set()

    async def wait(self, call: ApiCall) -> None:
        with self._lock:
            self._arrived.append(call)
        while not self._released.is_set():  # a threading.Event: released from the test thread
            await asyncio.sleep(0.02)


class _Failing:
    """Requests answered with ``failures`` in turn; ``answered`` counts them."""

    def __init__(self, matches: Matcher, failures: Sequence[Failure]) -> None:
        self.matches = matches
        self._failures: Iterator[Failure] = itertools.cycle(failures)
        self.answered = 0

    def next(self) -> Failure:
        self.answered += 1
        return next(self._failures)


class FaultSwitch:
    """The rules in force; set and cleared from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holds: list[Hold] = []
        self._failing: list[_Failing] = []

    def hold(self, matches: Matcher) -> Hold:
        hold = Hold(matches)
        with self._lock:
            self._holds.append(hold)
        return hold

    def fail(self, matches: Matcher, failures: Sequence[Failure]) -> None:
        with self._lock:
            self._failing.append(_Failing(matches, failures))

    @property
    def failed(self) -> int:
        """How many requests the failing rules answered so far."""
        with self._lock:
            return sum(rule.answered for rule in self._failing)

    def clear(self) -> None:
        """Every rule off; held requests are released (answered 503, without effect)."""
        for hold in self.stop():
            hold.release()

    def stop(self) -> list[Hold]:
        """Every rule off, but the requests held so far stay held (a server that never answers
        them: a network black hole) until the caller releases the holds returned."""
        with self._lock:
            holds, self._holds, self._failing = self._holds, [], []
        return holds

    def pick(self, call: ApiCall) -> Hold | Failure | None:
        with self._lock:
            for hold in self._holds:
                if hold.matches(call):
                    return hold
            for rule in self._failing:
                if rule.matches(call):
                    return rule.next()
        return None


def _answer(failure: Failure) -> aiohttp.web.Response:
    """The failure as a real API server writes it: a ``Status`` object."""
    status: dict[str, Any] = {"apiVersion": "v1", "kind": "Status", "metadata": {},
                              "status": "Failure", "message": failure.message,
                              "reason": failure.reason, "code": failure.status}
    headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after else None
    return aiohttp.web.json_response(status, status=failure.status, headers=headers)


@attrs.define(kw_only=True)
class FaultyEmulator(KubeEmulator):
    """The emulator, with :attr:`faults` deciding first what happens to each request."""

    faults: FaultSwitch = attrs.field(factory=FaultSwitch)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        call = self._api_call(request)
        picked = self.faults.pick(call)
        if isinstance(picked, Hold):
            await picked.wait(call)
            return _answer(Failure(503, "ServiceUnavailable",
                                   "the request was held by the test and dropped"))
        if isinstance(picked, Failure):
            if picked.stall:
                await asyncio.sleep(picked.stall)
            return _answer(picked)
        return await super()._handle(request)


def by_token(token: str, *, verbs: Sequence[str] = (), resource: str | None = None,
             namespace: str | None = None) -> Matcher:
    """A matcher: requests with this bearer token (and, if given, these verbs, this resource
    plural, this namespace)."""
    def matches(call: ApiCall) -> bool:
        return (call.token == token and (not verbs or call.verb in verbs)
                and (resource is None or call.resource == resource)
                and (namespace is None or call.namespace == namespace))
    return matches


__all__ = ["INTERNAL_ERROR", "TOO_MANY_REQUESTS", "Failure", "FaultSwitch", "FaultyEmulator",
           "Hold", "by_token", "timeout"]
