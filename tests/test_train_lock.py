"""The run folder's lock: one writer at a time, stale locks of dead processes taken over with a note."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from occreid.engine.run_lock import LOCK_NAME, RunInUse, RunLock


def test_a_second_lock_on_the_same_folder_is_refused_until_released(tmp_path):
    first = RunLock(tmp_path)
    assert first.note is None
    held = json.loads((tmp_path / LOCK_NAME).read_text())
    assert held["pid"] > 0 and held["host"]
    with pytest.raises(RunInUse, match=rf"run.out={tmp_path} is in use: an earlier Trainer of this process"):
        RunLock(tmp_path)
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    RunLock(tmp_path).release()


def test_a_lock_held_by_another_process_is_refused_naming_it(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from occreid.engine.run_lock import RunLock; "
         f"lock = RunLock({str(tmp_path)!r}); print('held', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInUse, match=rf"in use: process {holder.pid} on .* \(started .*\) is training"):
            RunLock(tmp_path)
    finally:
        holder.communicate("\n", timeout=60)
    RunLock(tmp_path).release()  # its lock went with it


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_note(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": "h", "started": "2026-01-01 00:00:00"}))
    lock = RunLock(tmp_path)
    assert lock.note is not None and f"from process {pid} on h" in lock.note and "no longer running" in lock.note
    lock.release()


def test_a_folder_the_lock_created_is_removed_again_when_nothing_was_written(tmp_path):
    RunLock(tmp_path / "new").release()
    assert not (tmp_path / "new").exists()
