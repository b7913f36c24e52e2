"""Omniglot's official zips, downloaded for users (never at run time in tests: they read local files,
and ``file://`` URLs exercise this code). :func:`metagan.data.sources.read_omniglot_zip` reads what
it downloads."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from metagan.errors import BadInput
from metagan.files import move_into_place, sha256_file

log = logging.getLogger(__name__)

OMNIGLOT_BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
OFFICIAL_URL = OMNIGLOT_BASE_URL + "images_background.zip"
OFFICIAL_EVALUATION_URL = OMNIGLOT_BASE_URL + "images_evaluation.zip"


def download_omniglot(
    dest_dir: str | Path,
    url: str = OFFICIAL_URL,
    sha256: str | None = None,
    timeout: float = 60.0,
    chunk_bytes: int = 1 << 20,
) -> Path:
    """Download an Omniglot zip into ``dest_dir`` (skipped if already there) and return its path.

    ``url`` may be ``https://``, ``http://`` or ``file://``. The download goes to a temporary
    file that is renamed into place only once complete and, when ``sha256`` is given, verified,
    so an interrupted download never looks like a finished one.
    """
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("https", "http", "file"):
        raise BadInput(f"unsupported URL scheme {scheme!r} in {url}; use https, http or file")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name:
        raise BadInput(f"cannot tell a file name from URL {url}")
    dest = dest_dir / name

    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256.lower()):
        log.info("%s already present, not downloading", dest)
        return dest

    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=f".{name}.") as part:
        tmp = Path(part) / name
        digest = hashlib.sha256()
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(chunk_bytes):
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if sha256 is not None and got != sha256.lower():
            raise BadInput(f"checksum mismatch for {url}: expected sha256 {sha256.lower()}, got {got}")
        if not zipfile.is_zipfile(tmp):
            raise BadInput(f"{url} did not return a zip file (an error page or a moved file?)")
        move_into_place(tmp, dest)  # complete and verified, or not there at all
    log.info("downloaded %s -> %s", url, dest)
    return dest


