"""File helpers: line reading with a UTF-8 policy, hashing, and atomic outputs.

Nothing the toolkit writes appears half-done: files and directories are written under a
temporary name next to their destination and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import tempfile
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from nmt.errors import InputError, NmtError

#: bytes read per chunk when hashing or counting
_CHUNK = 1 << 20


def open_binary(path: str | Path) -> BinaryIO:
    """Open a file for reading bytes, transparently decompressing ``.gz``; errors name the file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a file")
    try:
        if p.suffix == ".gz":
            return gzip.open(p, "rb")  # type: ignore[return-value]
        return open(p, "rb")
    except OSError as exc:
        raise InputError(f"{p}: cannot open ({exc.strerror or exc})") from None


def count_lines(path: str | Path) -> int:
    """Number of lines as ``wc -l`` counts them, plus a last line without a newline."""
    n, last = 0, b"\n"
    with open_binary(path) as f:
        try:
            while chunk := f.read(_CHUNK):
                n += chunk.count(b"\n")
                last = chunk[-1:]
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputError(f"{path}: cannot read ({exc})") from None
    return n + (last != b"\n")


def read_lines(path: str | Path, on_invalid_utf8: str = "error") -> Iterator[tuple[int, str | None]]:
    """Yield ``(line_number, text)`` for each line; ``text`` is None for a skipped invalid line.

    Lines end at LF; a CR before it is dropped (CRLF files read like LF files), and a UTF-8
    byte-order mark at the start is dropped. ``on_invalid_utf8`` is ``error`` (raise
    :class:`InputError` naming file and line), ``skip`` (yield None) or ``replace`` (U+FFFD).
    """
    with open_binary(path) as f:
        try:
            for lineno, raw in enumerate(f, start=1):
                if raw.endswith(b"\n"):
                    raw = raw[:-1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    if on_invalid_utf8 == "skip":
                        yield lineno, None
                    elif on_invalid_utf8 == "replace":
                        yield lineno, raw.decode("utf-8", errors="replace")
                    else:
                        raise InputError(
                            f"{path}:{lineno}: invalid UTF-8 at byte {exc.start} of the line "
                            "(use --on-invalid-utf8 skip|replace to go on)") from None
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputError(f"{path}: cannot read ({exc})") from None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` when the block succeeds.

    On any exception (Ctrl-C included) the temporary directory is removed and ``path`` is
    left as it was. An existing ``path`` is refused unless ``overwrite``.
    """
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise InputError(f"{dest}: already exists (use --overwrite to replace it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise NmtError(f"{dest}: cannot write ({exc.strerror or exc})") from None
        raise


@contextlib.contextmanager
def atomic_open_text(path: str | Path) -> Iterator[typing.TextIO]:
    """Open a text file for streaming writes that appears at ``path`` only when complete."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
