"""The one way digits reads and writes its own files: reads bounded in size that never wait on a pipe, and atomic
writes that never follow a link.

`read_bounded` reads a regular file of limited size and refuses anything else at once; `write_atomically` (and,
for writers that insist on their own file, `new_partial` and `publish`) put a finished file in place in one step.
Run folders (`digits.training.runs`), exports, reports, calibration files and the not-a-digit detector all use
them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

# A run's JSON and CSV files are a few kilobytes; a bigger one was not written by digits.
MAX_RUN_FILE_BYTES = 10 * 2**20


def read_bounded(path: Path, max_bytes: int = MAX_RUN_FILE_BYTES) -> bytes:
    """The bytes of the regular file at `path`, refused (OSError, or ValueError naming why) when it is anything
    else or holds more than `max_bytes`.

    The file is opened without waiting (O_NONBLOCK) and checked on the open descriptor (fstat), so a named pipe
    is refused at once instead of waiting for a writer for ever, a link to /dev/zero is refused unread, and a
    file swapped for either after a check is still caught; at most `max_bytes` + 1 bytes are ever read.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise ValueError("it is not a regular file but a folder, a pipe, a device or a socket")
        if status.st_size > max_bytes:
            raise ValueError(f"it is {status.st_size:,} bytes, more than the {max_bytes:,} digits reads")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(descriptor, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:  # Grew while being read.
            raise ValueError(f"it is more than the {max_bytes:,} bytes digits reads")
        return b"".join(chunks)
    finally:
        os.close(descriptor)


def write_atomically(path: Path, content: str | bytes, *, exclusive: bool = False) -> None:
    """Write `content` (text as UTF-8) to `path` through a temporary file beside it, so a reader never sees half a
    file (nor an empty one left over on a full disk): the one way digits writes a file.

    The temporary file gets a fresh name and is created exclusively (O_EXCL), so a file or link planted at a
    predictable name is never written through; the rename that puts it at `path` replaces a link there rather than
    following it. With `exclusive`, anything already at `path`, even a dangling link, is a FileExistsError instead.
    """
    with new_partial(path) as partial:
        with open(partial, "wb") as file:
            file.write(content.encode("utf-8") if isinstance(content, str) else content)
        publish(partial, path, exclusive=exclusive)


@contextlib.contextmanager
def new_partial(path: Path, suffix: str = ".partial") -> Iterator[Path]:
    """A fresh, empty temporary file beside `path` (readable by all, as a finished file is), removed unless the
    block moved it into place; `suffix` ends its name, for writers that insist on one (Keras's ".keras")."""
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    partial = Path(name)
    try:
        os.fchmod(descriptor, 0o644)
        os.close(descriptor)
        yield partial
    finally:
        if partial.is_dir() and not partial.is_symlink():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)


def publish(partial: Path, path: Path, *, exclusive: bool = False) -> None:
    """Move the finished `partial` to `path` in one step (see `write_atomically` for `exclusive`)."""
    if not exclusive:
        os.replace(partial, path)
        return
    try:
        # A hard link is created only where nothing is, and never through a link: the no-replace rename.
        os.link(partial, path, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:  # A folder (a SavedModel), or a file system without hard links: check, then rename.
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.rename(partial, path)
        return
    partial.unlink()
