"""The clear header of a value blob: its format version and the id of the data key that wrapped
it (layout in ``crypto``'s docstring).

Apart from ``crypto`` so that code that only reads which key a stored value is under (the audit
entries the store writes, ``fxctl audit consumers --data-key``) needs no cipher: storage stores
bytes. Pure: no I/O here.
"""

from __future__ import annotations

import struct

from fx_operator.exceptions import IntegrityError

FORMAT_VERSION = 1
DATA_KEY_ID_BYTES = 16
VALUE_HEADER = struct.Struct(f">B{DATA_KEY_ID_BYTES}s")
VALUE_HEADER_BYTES = VALUE_HEADER.size


def header_data_key_id(header: bytes) -> str:
    """The data key id in a value blob's header (its first VALUE_HEADER_BYTES bytes)."""
    if len(header) != VALUE_HEADER.size:
        raise IntegrityError("secret blob is truncated")
    version, key_id = VALUE_HEADER.unpack(header)
    if version != FORMAT_VERSION:
        raise IntegrityError(f"secret blob has unknown format version {version}")
    return bytes(key_id).hex()
