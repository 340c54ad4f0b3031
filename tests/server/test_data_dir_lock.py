"""One node per data directory: a second holder, in this process or another, is refused with a one-line reason."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rumor.server.data_dir_lock import LOCK_FILE, DataDirLock, DataDirLockedError
from rumor.server.storage import Storage

WAIT_S = 15.0
ROOT = Path(__file__).resolve().parents[2]


async def test_a_second_storage_on_one_directory_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = Storage(tmp_path)
    await first.open()
    second = Storage(tmp_path)
    with pytest.raises(DataDirLockedError) as caught:
        await second.open()
    assert str(caught.value) == (f"data directory {tmp_path} is in use by another rumor node (pid {os.getpid()}, "
                                 "this very process): give each node its own --data-dir")
    assert caught.value.code == "data_dir_locked" and caught.value.pid == os.getpid()
    await second.close()  # a refused storage closes cleanly, and leaves the holder's lock alone
    with pytest.raises(DataDirLockedError):
        await Storage(tmp_path).open()
    await first.append_delta("k", "counter", b"d")
    await first.close()
    again = Storage(tmp_path)
    recovered = await again.open()
    assert [key for _, key, _, _ in recovered.deltas] == ["k"]
    await again.close()


async def test_in_memory_storage_takes_no_lock(tmp_path: Path) -> None:
    memory = Storage(None)
    await memory.open()
    assert not (tmp_path / LOCK_FILE).exists()
    await memory.close()


@pytest.mark.integration  # a real second process
def test_another_process_holding_the_directory_is_named_by_pid_and_a_kill_9_frees_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from server.data_dir_lock import "
         "DataDirLock; DataDirLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)",
         str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], WAIT_S)
        assert ready and holder.stdout.readline().strip() == "locked"
        lock = DataDirLock(tmp_path)
        with pytest.raises(DataDirLockedError) as caught:
            lock.acquire()
        assert caught.value.pid == holder.pid and f"(pid {holder.pid})" in str(caught.value)
        holder.send_signal(signal.SIGKILL)  # no cleanup at all: the kernel releases the lock with the process
        holder.wait(WAIT_S)
        lock.acquire()
        assert lock.held and (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        lock.release()
        assert not lock.held and (tmp_path / LOCK_FILE).read_text() == ""
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(WAIT_S)
