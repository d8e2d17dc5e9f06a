"""File helpers every floor shares: atomic writes, sha256, marked-section splicing, package
lookup, directory locks.

Nothing here imports the rest of the package but its error type, so any module may use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from faceptor_edge.errors import UserError


def umask() -> int:
    """The process's file-creation mask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one.

    The file gets the mode the old one had, or the user's umask for a new one; a failed
    write leaves no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, record: object, *, indent: int | None = 2) -> None:
    """`atomic_write_text` of strict JSON: a NaN or infinity is a bug upstream (undefined
    numbers are written as null, with the reason beside them), so it raises ValueError
    instead of writing the bare `NaN` no JSON reader accepts."""
    atomic_write_text(path, json.dumps(record, indent=indent, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike[str], what: str) -> object:
    """The JSON content of a file; one `UserError` naming `what` when it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"{what} cannot be read: {error.strerror or error}") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{what} is not valid JSON: {error}") from error


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def splice_section(path: Path, section: str, start: str, end: str) -> None:
    """Put `section` (which begins with `start` and ends with `end`) into the Markdown file
    `path`: in place of the marked block if the file has one, else appended (or a new file)."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        head, _, rest = text.partition(start)
        text = head + section.rstrip("\n") + rest.partition(end)[2]
    else:
        text += ("\n" if text and not text.endswith("\n") else "") + section
    atomic_write_text(path, text)


def package_dir(package: str, sub: str = "") -> Path | None:
    """An installed package's folder (or a folder `sub` inside it), found without importing
    it (several packages here carry models or data but cannot be imported); None if absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / sub


@contextlib.contextmanager
def locked_directory(directory: Path, what: str = "run") -> Iterator[None]:
    """Hold `directory` for one process: a second process that asks for it while this one
    holds it gets a UserError naming the holder's pid. The lock (an `flock` on
    `directory/.lock`) goes with the process, so a killed run leaves nothing stale."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(f"{directory}: in use by another {what} (pid {holder}); wait for it or choose "
                            "another directory") from None  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
