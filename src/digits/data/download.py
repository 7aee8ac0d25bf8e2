"""Fetch one file from a list of mirrors, checked by its sha256 and stored atomically.

Only the standard library (urllib), so it works wherever Python does; data.py decides what to fetch.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_SECONDS = 30  # per connection attempt and per read; a stalled mirror gives way to the next one
CHUNK_BYTES = 1 << 16


class DownloadFailed(Exception):
    """No mirror delivered the file; `failures` holds one "url: reason" per mirror tried."""

    def __init__(self, failures: list[str]):
        super().__init__("; ".join(failures) or "no mirrors to try")
        self.failures = failures


def fetch(urls: list[str], target: Path, sha256: str, size: int) -> str:
    """Download the first of `urls` that serves `size` bytes with this sha256 to `target`; return that URL.

    Each download goes to a temporary file beside `target` that is renamed only once its checksum matches,
    so an interrupted or bad download never leaves a file that looks finished.
    """
    failures = []
    for url in urls:
        print(f"digits: downloading {target.name} ({size / 1e6:.1f} MB) from {url}", file=sys.stderr)
        try:
            _fetch_one(url, target, sha256, size)
            return url
        except _MirrorFailure as failure:
            failures.append(f"{url}: {failure}")
    raise DownloadFailed(failures)


class _MirrorFailure(Exception):
    pass


def _fetch_one(url: str, target: Path, sha256: str, size: int) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        digest, received = hashlib.sha256(), 0
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as reply:
            while chunk := reply.read(CHUNK_BYTES):
                received += len(chunk)
                # A mirror that sends more than the file's size is wrong; stop before it fills the disk.
                if received > size:
                    raise _MirrorFailure(f"it sent more than the {size:,} bytes of the official file")
                digest.update(chunk)
                out.write(chunk)
        if received < size:
            raise _MirrorFailure(f"it sent only {received:,} of the {size:,} bytes of the official file")
        if digest.hexdigest() != sha256:
            raise _MirrorFailure(f"the {received:,} bytes it sent do not have the official sha256")
        os.replace(temporary, target)
    except urllib.error.HTTPError as error:
        raise _MirrorFailure(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise _MirrorFailure(str(error.reason)) from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise _MirrorFailure(str(error) or type(error).__name__) from None
    finally:
        # Also on KeyboardInterrupt: nothing half-downloaded stays behind.
        if os.path.exists(temporary):
            os.unlink(temporary)
