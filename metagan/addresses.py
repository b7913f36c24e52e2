"""Where outputs go: a local folder or ``s3://bucket[/prefix]``, told apart in one place.

An address with a scheme that is not exactly ``s3://`` and a valid bucket (``S3://b``, ``s3://``,
``s3:/b``, ``gs://b``) is refused: read as a path it named a local folder (``./S3:/b``), so a
typo wrote a night's batch to the local disk and reported success.
"""

from __future__ import annotations

import re
from pathlib import Path

from metagan.errors import BadInput

S3_SCHEME = "s3://"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
"""S3's bucket naming rules: 3 to 63 lowercase letters, digits, dots and hyphens, a letter or digit at each end."""


def s3_address(address: str | Path) -> tuple[str, str] | None:
    """``(bucket, prefix)`` of ``s3://bucket[/prefix]``; None for a plain path (a local folder).
    Any other address with a scheme, or one starting ``s3:`` in any case, is BadInput naming it."""
    text = str(address)  # a Path folds s3://b into s3:/b: refused below, never a local folder
    if not text.strip():  # "" would be the current folder, which nobody means
        raise BadInput("an empty address: give a folder or s3://bucket[/prefix]")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise BadInput(f"{text!r}: an address with a control character (a NUL, a newline...)")
    if not (_SCHEME.match(text) or text[:3].lower() == "s3:"):
        return None
    if not text.startswith(S3_SCHEME):
        raise BadInput(f"{text!r}: an output goes to a local folder or to s3://bucket[/prefix] (s3:// in lowercase)")
    bucket, _, prefix = text.removeprefix(S3_SCHEME).partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise BadInput(f"{text!r}: " + (f"{bucket!r} is not an S3 bucket name (3 to 63 lowercase letters, digits, "
                                         "dots and hyphens)" if bucket else "no bucket (s3://bucket[/prefix])"))
    return bucket, prefix.strip("/")


def is_s3(address: str | Path) -> bool:
    """True for ``s3://bucket[/prefix]``, False for a local folder; BadInput for a malformed address."""
    return s3_address(address) is not None


def file_uri_path(uri: str) -> Path:
    """The local path a ``file:`` URI names (MLflow's artifact locations), its %-escapes undone."""
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(uri).path))
