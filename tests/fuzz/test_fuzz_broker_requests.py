"""Fuzz target: the run channel's request bodies (``domain.channel_requests``), which a run's
script sends to the broker, and the broker's real HTTP endpoint (``services.broker``) over
aiohttp's test server, on the embedded store.

Property: any body parses to a ``SecretWrite`` / ``StateWrite`` whose value is plain JSON, or
raises ``ValidationError`` with a printable message; over HTTP, any body is answered 200 or 4xx
with a JSON error, never 500 or 503.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from fx_operator.config import Settings
from fx_operator.domain.channel_requests import parse_secret_write, parse_state_write
from fx_operator.endpoints.broker import PodIdentity, make_app
from fx_operator.exceptions import ValidationError
from fx_operator.services.configured_store import open_secret_service
from fx_operator.services.run_keys import RunKeyService
from fx_operator.services.runs import RunService
from hypothesis import event, example, given
from hypothesis import strategies as st

from fuzz import strategies as fz
from fuzz.checks import assert_plain_json, message_is_clean
from fuzz.profiles import fuzz_settings
from fx_ef import contract

FIELDS = ["name", "value", "scope", "key"]
BODIES = st.one_of(
    fz.object_text(st.lists(st.tuples(st.sampled_from(FIELDS).map(json.dumps) | fz.KEY_TOKENS,
                                      fz.VALUE_TOKENS), max_size=4)).map(fz.encode),
    st.tuples(st.sampled_from(['"name": "A"', '"key": "k"']), fz.VALUE_TOKENS).map(
        lambda pair: fz.encode("{" + pair[0] + ', "value": ' + pair[1] + "}")),
)
ALL_BODIES = st.one_of(BODIES, fz.mutated(BODIES), fz.RAW_BYTES)


def _parses_or_refuses(raw: bytes) -> None:
    for parse in (parse_secret_write, parse_state_write):
        try:
            request = parse(raw)
        except ValidationError as e:
            message_is_clean(e)
            event(f"{parse.__name__}: refused")
            continue
        event(f"{parse.__name__}: accepted")
        assert_plain_json(request.value)
        for text in (getattr(request, "name", ""), getattr(request, "key", ""),
                     getattr(request, "scope", "")):
            assert isinstance(text, str) and "\x00" not in text
            text.encode("utf-8")


@fuzz_settings(300)
@given(ALL_BODIES)
@example(b'{"name": "A", "value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
@example(b'{"name": "A", "value": ' + b"9" * 4_301 + b"}")
@example(b'{"name": "A", "value": NaN}')
@example(b'{"name": "\\ud800", "value": 1}')
@example(b'{"key": "a\\u0000b", "value": 1}')
@example(b'{"name": ["A"], "value": 1}')
def test_channel_request_bodies(raw: bytes) -> None:
    _parses_or_refuses(raw)


# --- the broker's HTTP endpoint ------------------------------------------------------------------

class _OnePod:
    """The cluster's answers for one live run pod with one valid token."""

    identity = PodIdentity("team-a", "etl-1", "uid-1", "default")

    async def authenticate(self, token: str) -> PodIdentity | None:
        return self.identity if token == TOKEN else None

    async def pod_run_id(self, namespace: str, pod_name: str, pod_uid: str) -> str | None:
        return RUN_ID


TOKEN = "token-of-etl-1"
RUN_ID = "run-fuzz-1"
REQUESTS = st.tuples(st.sampled_from([contract.CHANNEL_SECRETS_PATH, contract.CHANNEL_STATE_PATH]),
                     ALL_BODIES)


@fuzz_settings(150)
@given(REQUESTS)
@example((contract.CHANNEL_SECRETS_PATH, b'{"name": "A", "value": ' + b"[" * 5_000 + b"]" * 5_000
          + b"}"))
@example((contract.CHANNEL_STATE_PATH, b'{"key": "a\\u0000b", "value": 1}'))
@example((contract.CHANNEL_SECRETS_PATH, b'{"name": "A", "value": "ok"}'))
@example((contract.CHANNEL_STATE_PATH, b'{"key": "k", "value": {"n": 1}}'))
def _http_example(request: tuple[str, bytes]) -> None:
    path, body = request
    status, answer = LOOP.run_until_complete(_post(path, body))
    event(f"HTTP {status}")
    STATUSES[status] += 1
    assert status in (200, 400, 403, 404, 409, 413), (status, answer)
    assert isinstance(answer, dict) and (status == 200 or isinstance(answer.get("error"), str))


async def _post(path: str, body: bytes) -> tuple[int, Any]:
    # A file-like body: aiohttp warns (ResourceWarning) about large raw bytes.
    response = await CLIENT.post(path, data=io.BytesIO(body), headers={
        "Authorization": f"Bearer {TOKEN}", contract.RUN_HEADER: RUN_ID,
        "Content-Type": "application/json"})
    return response.status, await response.json()


LOOP: asyncio.AbstractEventLoop
STATUSES: Counter[int] = Counter()
CLIENT: TestClient[Any, Any]


def test_broker_http_endpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    global LOOP, CLIENT
    service = open_secret_service(Settings(home=tmp_path, database_url=None,
                                           master_key_file=None, actor="user:fuzz"))
    keys = RunKeyService(service.store, service.keys)
    keys.register(RUN_ID, "team-a", "exec-1", "fx-run-1", "etl", os.urandom(32), False)
    keys.claim(RUN_ID, _OnePod.identity, RUN_ID)  # the pod got its key: its channel is open
    app = make_app(authenticator=_OnePod(), run_keys=keys, runs=RunService(service))
    LOOP = asyncio.new_event_loop()
    CLIENT = TestClient(TestServer(app), loop=LOOP)
    try:
        LOOP.run_until_complete(CLIENT.start_server())
        with caplog.at_level(logging.WARNING):
            _http_example()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert STATUSES[200] and STATUSES[400], STATUSES  # the explicit examples: one of each
    finally:
        LOOP.run_until_complete(CLIENT.close())
        LOOP.close()
