"""A run folder that survives kills, full disks and a second `train` pointed at it.

- `RunLock`: one writer per run folder. `fcntl.flock` on `RUN/train.lock`; the kernel
  releases the lock when the process ends, however it ends (even `kill -9`), so a stale
  lock never blocks the next run.
- `append_jsonl`: one `metrics.jsonl` line in one `write`; if the write fails (disk full)
  the file is cut back to its last complete line, so `--resume` and `plot` always read it.
- `read_jsonl`: reads the complete lines and skips a torn last line (a crash mid-write on a
  file system that split it), with a note.
- `RunFolderWriteError`: a write that failed, with the folder, the bytes needed and the bytes
  free in the message (the CLI prints it and exits with status 1).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

try:  # POSIX; on Windows there is no lock (see docs/training.md)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

LOCK_NAME = "train.lock"


class RunFolderWriteError(RuntimeError):
    """A checkpoint or log line could not be written; what was there before is intact."""


class RunFolderLockedError(RuntimeError):
    """Another live process is training into this run folder."""


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def write_error(
    what: str, folder: Path, needed: int, err: OSError, kept: str
) -> RunFolderWriteError:
    """A message naming the folder, the bytes needed and (for a full disk) the bytes free."""
    free = free_bytes(folder)
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EACCES: "the folder is not writable",
        errno.EPERM: "the folder is not writable",
        errno.EROFS: "the file system is read-only",
    }.get(err.errno, os.strerror(err.errno) if err.errno else str(err))
    space = f", {free / 2**20:.1f} MiB free there" if free is not None else ""
    return RunFolderWriteError(
        f"could not write {what} into {folder}: {reason} ({err}). It needs about "
        f"{needed / 2**20:.1f} MiB ({needed} bytes){space}. {kept} Free some space (or fix "
        f"the permissions, or choose another --output-dir), then continue with --resume."
    )


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line atomically with respect to failures: all of it or none of it."""
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
            if written != len(line):  # a short write: the disk filled up inside the line
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as err:
            os.ftruncate(fd, start)  # back to the last complete line
            raise write_error(
                "a metrics line",
                path.parent,
                len(line),
                err,
                f"{path.name} keeps its complete lines.",
            ) from err
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; a torn (unparsable) last line is skipped with a note."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i != len(lines) - 1:
                raise ValueError(f"{path}, line {i + 1}: not a JSON object: {line[:80]!r}") from err
            print(f"note: {path}: skipped a torn last line (the run was stopped mid-write)")
    return records


class RunLock:
    """Hold `RUN/train.lock` while training; a second holder is refused with a clear message."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        if fcntl is None:  # pragma: no cover
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise write_error(
                "the lock file", self.path.parent, 64, err, "Nothing was written."
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderLockedError(
                f"{self.path.parent} is being trained by another live process ({holder}). "
                "One run folder has one writer: wait for it to finish, stop it (it saves a "
                "checkpoint on Ctrl-C / SIGTERM, then `--resume`), or choose another "
                "--output-dir."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
