"""Checkpoint files under faults: a full disk, a damaged last.pt, writes a killed process left behind."""

from __future__ import annotations

import errno

import pytest
import torch

from occreid.engine import checkpoint
from occreid.engine.checkpoint import (
    CheckpointWriteError,
    load_for_resume,
    remove_partial_writes,
    save_atomic,
)


def fake_ckpt(iteration: int) -> dict:
    return {"model": {"w": torch.full((4,), float(iteration))}, "config": {"model": {"name": "bot"}},
            "iteration": iteration}


def test_a_full_disk_leaves_no_partial_file_and_the_old_checkpoint_whole(tmp_path, monkeypatch):
    save_atomic(fake_ckpt(3), tmp_path / "last.pt", keep_previous=True)
    before = (tmp_path / "last.pt").read_bytes()

    def half_then_enospc(obj, f, *args, **kwargs):
        f.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", half_then_enospc)
    with pytest.raises(CheckpointWriteError, match=r"no space left on the device of .*the partial file was removed "
                                                   r"and last\.pt on disk is unchanged"):
        save_atomic(fake_ckpt(6), tmp_path / "last.pt", keep_previous=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert (tmp_path / "last.pt").read_bytes() == before


def test_torch_wrapping_the_disk_error_is_still_reported_as_a_full_disk(tmp_path, monkeypatch):
    def wrapped(obj, f, *args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None

    monkeypatch.setattr(checkpoint.torch, "save", wrapped)
    with pytest.raises(CheckpointWriteError, match="no space left.*no last.pt was written"):
        save_atomic(fake_ckpt(1), tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_each_save_keeps_the_checkpoint_before_it(tmp_path):
    for it in (3, 6, 9):
        save_atomic(fake_ckpt(it), tmp_path / "last.pt", keep_previous=True)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["iteration"] == 9
    assert torch.load(tmp_path / "last.prev.pt", weights_only=True)["iteration"] == 6


def test_resume_falls_back_to_the_previous_checkpoint_and_names_the_damaged_one(tmp_path):
    for it in (3, 6):
        save_atomic(fake_ckpt(it), tmp_path / "last.pt", keep_previous=True)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    ckpt, path, notes = load_for_resume(tmp_path, method="bot")
    assert ckpt["iteration"] == 3 and path.name == "last.prev.pt"
    assert len(notes) == 1 and "last.pt cannot be loaded" in notes[0] and "last.pt.corrupt" in notes[0]
    assert (tmp_path / "last.pt.corrupt").is_file() and not (tmp_path / "last.pt").exists()


def test_resume_with_no_checkpoint_returns_nothing(tmp_path):
    assert load_for_resume(tmp_path) == (None, None, [])


def test_partial_writes_of_a_killed_process_are_removed(tmp_path):
    (tmp_path / ".last.pt.tmp123").write_bytes(b"half")
    (tmp_path / ".last.prev.pt.tmp123").write_bytes(b"half")
    save_atomic(fake_ckpt(1), tmp_path / "last.pt")
    removed = remove_partial_writes(tmp_path)
    assert sorted(p.name for p in removed) == [".last.prev.pt.tmp123", ".last.pt.tmp123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
