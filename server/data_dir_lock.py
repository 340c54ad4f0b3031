"""One node process per data directory: an exclusive `flock` on a lock file inside it.

Two nodes on one directory (a user who forgets `--data-dir` starts both in `./rumor-data`) would read the same
persisted node id and create dots under the same replica id: a counter incremented 3 + 3 times would read 3 and a set
would stay different on the two nodes forever. So storage takes this lock before it opens the database and refuses to
start when another holder has it.

Why `flock` on a file that is never deleted:
- The kernel drops the lock when its holder dies, even by `kill -9`, so a crashed node never leaves a stale lock
  that blocks its restart (a pid file alone would).
- `flock` locks belong to the open file description, so a second `Storage` on the same directory in the *same*
  process is refused too (POSIX `fcntl` record locks would let it through).
- Deleting the file on release would let a starting process lock an inode that another is about to unlink, and two
  processes could then each hold a lock on a different file. It stays; only its content (the holder's pid, for the
  error message) is cleared.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from rumor.server.errors import StorageError

LOCK_FILE = "rumor.lock"


class DataDirLockedError(StorageError):
    """Another node (process, or another `Storage` in this process) holds the data directory."""

    code = "data_dir_locked"

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        if pid is None:
            holder = "pid unknown"
        elif pid == os.getpid():
            holder = f"pid {pid}, this very process"
        else:
            holder = f"pid {pid}"
        super().__init__(f"data directory {data_dir} is in use by another rumor node ({holder}): "
                         "give each node its own --data-dir")
        self.data_dir = data_dir
        self.pid = pid


class DataDirLock:
    """Held from `acquire` to `release`; `release` is idempotent and safe after a failed `acquire`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Takes the lock without waiting; raises `DataDirLockedError` if someone else holds it."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirLockedError(self.data_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):  # the pid only improves an error message: never fail a start over it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the only descriptor of this open file description releases the lock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
