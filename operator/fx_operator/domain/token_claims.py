"""What a run pod's projected token says about its pod, read without verifying it.

A hint, never an identity: the broker starts reading the named pod while the API server reviews
the token, and uses what it read only when the review names the very same pod (namespace, name
and uid). A token that lies, or that is not a JWT, costs the broker nothing but that early read.
"""

from __future__ import annotations

import base64
import binascii
import json

MAX_TOKEN_CHARS = 16 * 1024  # a projected token is ~1 KiB; a bearer header is bounded anyway


def claimed_pod(token: str) -> tuple[str, str, str] | None:
    """(namespace, pod name, pod uid) as the token's unverified claims name them, or None."""
    parts = token.split(".")
    if len(token) > MAX_TOKEN_CHARS or len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        kubernetes = payload["kubernetes.io"]
        found = (kubernetes["namespace"], kubernetes["pod"]["name"], kubernetes["pod"]["uid"])
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError):
        return None
    if not all(isinstance(part, str) and part for part in found):
        return None
    return found
