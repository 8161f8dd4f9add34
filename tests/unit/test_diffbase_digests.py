"""kopf's record of the last handled spec keeps long strings as digests (the API server caps an
object's annotations at 256 KiB); a change still shows, as a changed digest."""

from __future__ import annotations

import hashlib

from fx_operator.handlers.lifecycle import DIGESTED_LENGTH, digested


def test_long_strings_become_digests_short_ones_stay() -> None:
    long = "x" * (DIGESTED_LENGTH + 1)
    essence = {"spec": {"scripts": [{"name": "main.py", "content": long}],
                        "params": {"n": 1, "flag": True, "none": None, "short": "abc"}}}
    assert digested(essence) == {"spec": {
        "scripts": [{"name": "main.py",
                     "content": "sha256:" + hashlib.sha256(long.encode()).hexdigest()}],
        "params": {"n": 1, "flag": True, "none": None, "short": "abc"}}}
    assert digested("y" * DIGESTED_LENGTH) == "y" * DIGESTED_LENGTH


def test_a_changed_long_string_changes_its_digest() -> None:
    before = {"encryptedData": {"K": "a" * 1000}}
    after = {"encryptedData": {"K": "a" * 999 + "b"}}
    assert digested(before) != digested(after)
    assert digested(before) == digested({"encryptedData": {"K": "a" * 1000}})
