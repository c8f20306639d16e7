"""Dead letters: entries a collector cannot apply, kept with the reason, bounded in count and size.

An entry that does not decode or fold (or whose seq is implausible) goes to the
workspace's dead-letter stream, never applied, then is acked.  The stream is bounded in
count (:data:`DEADLETTER_MAXLEN`) and in size: a letter keeps :data:`LETTER_FIELD_BYTES`
of the entry's fields at most (and the reason's first :data:`REASON_CHARS` characters),
noting the fields' full size and sha256 when it cuts, so the stream holds about
``DEADLETTER_MAXLEN x (LETTER_FIELD_BYTES + 2 KiB)`` at most (about 100 MB).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

__all__ = ["DEADLETTER_MAXLEN", "LETTER_FIELD_BYTES", "REASON_CHARS", "fields_digest", "letter"]

#: Dead letters kept: XADD MAXLEN ~ keeps this many and at most one stream node (100 entries) more.
DEADLETTER_MAXLEN: Final = 10_000
#: Bytes of an entry's fields (names and values) a dead letter keeps at most.
LETTER_FIELD_BYTES: Final = 8 * 1024
#: Characters of the reason a dead letter (and its log line) keeps at most.
REASON_CHARS: Final = 1024


def letter(stream: str, entry_id: bytes, reason: str, fields: dict[bytes, bytes]) -> dict[str | bytes, Any]:
    """A dead-letter entry: where the entry came from, why, and its fields as they were.

    Fields past :data:`LETTER_FIELD_BYTES` (names and values counted, in the entry's
    order) are cut (a value) or dropped (a field); the letter then says so: ``size``,
    the bytes of the entry's fields; ``sha256``, their :func:`fields_digest`; ``kept``,
    the bytes of them it holds.
    """
    letter: dict[str | bytes, Any] = {"stream": stream, "entry": entry_id, "reason": reason[:REASON_CHARS]}
    size = sum(len(key) + len(value) for key, value in fields.items())
    if size <= LETTER_FIELD_BYTES:
        letter.update({b"f:" + key: value for key, value in fields.items()})
        return letter
    room = LETTER_FIELD_BYTES
    for key, value in fields.items():
        if room <= len(key):
            break
        kept = value[: room - len(key)]
        letter[b"f:" + key] = kept
        room -= len(key) + len(kept)
    letter.update({"size": size, "sha256": fields_digest(fields), "kept": LETTER_FIELD_BYTES - room})
    return letter


def fields_digest(fields: dict[bytes, bytes]) -> str:
    """The sha256 (hex) of an entry's fields: each name, then each value, in order, each after
    its length as 8 bytes big-endian (what a cut dead letter notes of the entry it cut)."""
    digest = hashlib.sha256()
    for key, value in fields.items():
        for part in (key, value):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()
