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
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

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
    n, last, cr = 0, b"\n", False
    with open_binary(path) as f:
        try:
            while chunk := f.read(_CHUNK):
                n += chunk.count(b"\n")
                cr = cr or (n == 0 and b"\r" in chunk)
                last = chunk[-1:]
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise InputError(f"{path}: cannot read ({exc})") from None
    if n == 0 and cr:
        raise _cr_only(path)
    return n + (last != b"\n")


def _cr_only(path: str | Path) -> InputError:
    return InputError(f"{path}: lines end with CR alone (classic Mac text); "
                      "convert them to LF first, e.g. tr '\\r' '\\n'")


#: lines longer than this many bytes are skipped unread (counted as over-long): a corpus line
#: is a sentence, and a runaway "line" (a file without newlines) must not fill the memory
MAX_LINE_BYTES = 1 << 20


@dataclass
class LineCounts:
    """Oddities met while reading lines, for the summary (each line counted once per kind)."""

    bare_cr: int = 0        # a CR not before the LF (read as a space)
    nul: int = 0            # NUL bytes (read as spaces)
    bom: int = 0            # a byte-order mark at the start of the file (dropped)
    invalid_utf8: int = 0   # lines with invalid UTF-8 (skipped or replaced, by policy)
    overlong: int = 0       # lines over the byte limit (skipped)


class Line(NamedTuple):
    """One line read by :func:`read_lines`: its number, its text, and why it was skipped ("" if not)."""

    number: int
    text: str
    skipped: str = ""


def read_lines(path: str | Path, on_invalid_utf8: str = "error", counts: LineCounts | None = None,
               max_bytes: int = MAX_LINE_BYTES) -> Iterator[Line]:
    """Yield every line of a file as a :class:`Line`, numbered from 1.

    Lines end at LF; a CR before it is dropped (CRLF files read like LF files), and a UTF-8
    byte-order mark at the start is dropped. Other CRs and NUL bytes become spaces, and a file
    whose lines end with CR alone is refused. ``on_invalid_utf8`` is ``error`` (raise
    :class:`InputError` naming file and line), ``skip`` (a skipped line) or ``replace`` (U+FFFD).
    Lines over ``max_bytes`` are skipped without being held in memory. ``counts`` collects
    what was met.
    """
    counts = counts if counts is not None else LineCounts()
    with open_binary(path) as f:
        try:
            lineno = 0
            while raw := f.readline(max_bytes + 3):
                lineno += 1
                if not raw.endswith(b"\n") and len(raw) == max_bytes + 3:
                    while (more := f.readline(_CHUNK)) and not more.endswith(b"\n"):
                        pass
                    counts.overlong += 1
                    yield Line(lineno, "", "overlong")
                    continue
                ended = raw.endswith(b"\n")
                if ended:
                    raw = raw[:-1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                    counts.bom += 1
                if len(raw) > max_bytes:
                    counts.overlong += 1
                    yield Line(lineno, "", "overlong")
                    continue
                if b"\r" in raw:
                    if lineno == 1 and not ended:
                        raise _cr_only(path)
                    counts.bare_cr += 1
                    raw = raw.replace(b"\r", b" ")
                if b"\x00" in raw:
                    counts.nul += 1
                    raw = raw.replace(b"\x00", b" ")
                try:
                    yield Line(lineno, raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    counts.invalid_utf8 += 1
                    if on_invalid_utf8 == "skip":
                        yield Line(lineno, "", "invalid_utf8")
                    elif on_invalid_utf8 == "replace":
                        yield Line(lineno, raw.decode("utf-8", errors="replace"))
                    else:
                        raise InputError(
                            f"{path}:{lineno}: invalid UTF-8 at byte {exc.start} of the line "
                            "(use --on-invalid-utf8 skip|replace to go on)") from None
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` when the block succeeds.

    On any exception (Ctrl-C included) the temporary directory is removed and ``path`` is
    left as it was; an ``OSError`` (a full disk) becomes an :class:`NmtError` saying so. An
    existing ``path`` is refused unless ``overwrite``.
    """
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise InputError(f"{dest}: already exists (use --overwrite to replace it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result gets a normal directory's mode
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            # a write failed (a full disk, a quota): the partial output is gone, say so
            raise NmtError(f"{dest}: cannot write ({exc.strerror or exc}); nothing was written") from None
        raise


def _is_special(dest: Path) -> bool:
    """True for an existing path that is not a regular file (a FIFO, /dev/stdout, a device)."""
    return dest.exists() and not dest.is_file()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[typing.IO]:
    """Open a file for streaming writes (``mode`` ``w``: UTF-8 text, ``wb``: bytes) that appears at
    ``path`` only when complete.

    A FIFO or device (``/dev/stdout``) cannot be renamed onto, so it is written directly. A
    failed write (a full disk) removes the partial file and raises :class:`NmtError`.
    """
    encoding = None if "b" in mode else "utf-8"
    dest = Path(path)
    if _is_special(dest):
        try:
            with open(dest, mode, encoding=encoding) as f:
                yield f
        except OSError as exc:
            raise NmtError(f"{dest}: cannot write ({exc.strerror or exc})") from None
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it private; the result gets a normal file's mode
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
            raise NmtError(f"{dest}: cannot write ({exc.strerror or exc}); nothing was written") from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (directly to a FIFO or device)."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
