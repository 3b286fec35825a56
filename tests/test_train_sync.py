"""train.sync_every: the losses are read (and checked) every few iterations instead of every one. A bad loss
still stops the run within sync_every iterations and names its own iteration; no checkpoint ever holds
weights that took its update; the log and the weights are those of a run that reads every iteration."""

from __future__ import annotations

import json

import pytest
import torch

from occreid.config import load_config
from occreid.engine.checkpoint import load_checkpoint
from occreid.engine.loss_reading import PendingLosses
from occreid.engine.step_speed import GPU_SYNC_EVERY, resolve_sync_every
from occreid.engine.trainer import Trainer, TrainingDiverged
from occreid.errors import ConfigError, DatasetError

from .test_train_stops import overrides, poison_loss

DEFERRED = {"train.sync_every": 4, "train.max_iters": 12, "train.checkpoint_every": 4, "train.log_every": 100}


def trainer(root, out, **extra) -> Trainer:
    return Trainer(load_config(None, overrides(root, out, **{**DEFERRED, **extra})))


@pytest.fixture(scope="module")
def reference(tiny_market, tmp_path_factory):
    """A run that reads every loss, stopped after iteration 7: last.pt (iteration 4) and the model at 7."""
    out = tmp_path_factory.mktemp("reference") / "run"
    ref = trainer(tiny_market, out, **{"train.sync_every": 1})
    ref.fit(stop_after=7)
    assert ref.iteration == 7
    return {"last": load_checkpoint(out / "last.pt"), "model_at_7": ref.model.state_dict()}


def assert_same_model(a: dict, b: dict) -> None:
    for k, v in b.items():
        assert torch.equal(a[k], v), k


def test_a_nan_read_late_stops_within_sync_every_and_keeps_the_last_checked_checkpoint(
    tiny_market, tmp_path, monkeypatch, reference
):
    """NaN at iteration 5, read at iteration 8 (before its update): iterations 5-7 took tainted updates,
    so nothing is written at the stop and last.pt keeps iteration 4, equal to a run that read every loss."""
    t = trainer(tiny_market, tmp_path / "run")
    poison_loss(t, monkeypatch, at_call=5, factor=float("nan"))
    with pytest.raises(TrainingDiverged, match=r"loss became nan at iteration 5 \(.*\)\. The run stopped: the weights "
                                               r"after iteration 7 carry the update of iteration 5 \(train\.sync_every"
                                               r"=4 reads the losses every 4 iterations\), so they were not saved; "
                                               r"last\.pt holds iteration 4\. Lower train\.lr"):
        t.fit()
    assert t.iteration == 7 <= 5 + 4 - 1  # stopped during iteration 8, the first read after 5
    kept = load_checkpoint(tmp_path / "run" / "last.pt")
    assert kept["iteration"] == 4
    assert_same_model(kept["model"], reference["last"]["model"])
    assert not (tmp_path / "run" / "last.prev.pt").exists()
    assert not (tmp_path / "run" / ".lock").exists()


def test_a_nan_on_a_read_iteration_is_caught_before_its_update_as_with_every_iteration(
    tiny_market, tmp_path, monkeypatch, reference
):
    t = trainer(tiny_market, tmp_path / "run")
    poison_loss(t, monkeypatch, at_call=8, factor=float("nan"))
    with pytest.raises(TrainingDiverged, match=r"loss became nan at iteration 8 .*last\.pt holds iteration 7, written "
                                               r"at the stop; last\.prev\.pt holds iteration 4"):
        t.fit()
    kept = load_checkpoint(tmp_path / "run" / "last.pt")
    assert kept["iteration"] == 7
    assert_same_model(kept["model"], reference["model_at_7"])  # BN statistics as before the failed forward


def test_the_loss_guard_works_deferred_and_an_exploded_but_finite_state_is_not_saved(
    tiny_market, tmp_path, monkeypatch
):
    """Adam keeps the weights finite after a 1e6 x loss, so only the read order tells that they are tainted."""
    t = trainer(tiny_market, tmp_path / "run")
    poison_loss(t, monkeypatch, at_call=5, factor=1e6)
    with pytest.raises(TrainingDiverged, match=r"at iteration 5 is more than train\.loss_guard=1000 times the median "
                                               r".* of the last 4 losses .*the weights after iteration 7 carry the "
                                               r"update of iteration 5 .*last\.pt holds iteration 4\."):
        t.fit()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 4


def test_reading_every_four_iterations_logs_and_trains_exactly_as_reading_each(tiny_market, tmp_path, monkeypatch):
    reads = []
    real_read = PendingLosses.read

    def counted(self):
        if len(self):
            reads.append(len(self))
        return real_read(self)

    monkeypatch.setattr(PendingLosses, "read", counted)
    runs = {}
    for every in (1, 4):
        reads.clear()
        t = trainer(tiny_market, tmp_path / f"every{every}", **{
            "train.sync_every": every, "train.max_iters": 8, "train.log_every": 3, "train.checkpoint_every": 100})
        result = t.fit()
        log = [json.loads(ln) for ln in (tmp_path / f"every{every}" / "metrics.jsonl").read_text().splitlines()]
        clockless = [{k: v for k, v in r.items() if k not in ("time", "train_s")} for r in log]
        runs[every] = {"log": clockless, "reads": list(reads), "last": result.last_loss,
                       "model": t.model.state_dict(), "window": list(t.recent_losses)}
    assert [r["iter"] for r in runs[4]["log"]] == [3, 6, 8]
    assert runs[4]["log"] == runs[1]["log"]  # loss and every term, bit for bit
    assert runs[4]["last"] == runs[1]["last"] and runs[4]["window"] == runs[1]["window"]
    assert_same_model(runs[4]["model"], runs[1]["model"])
    assert runs[1]["reads"] == [1] * 8
    assert runs[4]["reads"] == [3, 1, 2, 2]  # at the log steps 3 and 6, and at the reads due at 4 and 8


def break_an_image_in_batch_3(monkeypatch) -> None:
    """The third image read in batch 3 (8 images a batch) raises DatasetError, as a corrupt file would."""
    from occreid.data import images

    real = images.read_image
    calls = {"n": 0}

    def fails_in_batch_3(path):
        calls["n"] += 1
        if calls["n"] == 2 * 8 + 3:
            raise DatasetError(f"{path}: cannot read image (broken data stream)")
        return real(path)

    monkeypatch.setattr(images, "read_image", fails_in_batch_3)


def test_a_stop_reads_the_pending_losses_before_it_saves(tiny_market, tmp_path, monkeypatch):
    """An error in batch 3: losses 1-2 were not read yet; they are read, found good, and last.pt holds 2."""
    break_an_image_in_batch_3(monkeypatch)
    t = trainer(tiny_market, tmp_path / "run")
    with pytest.raises(DatasetError, match=r"The run stopped: last\.pt holds iteration 2, written at the stop"):
        t.fit()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 2


def test_a_bad_loss_found_only_at_a_stop_is_told_and_nothing_is_saved(tiny_market, tmp_path, monkeypatch):
    break_an_image_in_batch_3(monkeypatch)
    t = trainer(tiny_market, tmp_path / "run")
    poison_loss(t, monkeypatch, at_call=2, factor=float("nan"))
    with pytest.raises(DatasetError, match=r"The run stopped: loss became nan at iteration 2 \(.*\), read at the "
                                           r"stop; the weights after iteration 2 carry the update of iteration 2 "
                                           r".*not saved; no checkpoint was written"):
        t.fit()
    assert not (tmp_path / "run" / "last.pt").exists()


def test_sync_every_is_validated_and_auto_is_one_on_the_cpu():
    with pytest.raises(ConfigError, match=r"train\.sync_every: 0 is out of range; expected an integer >= 1 "
                                          r"\(or 'auto'\)"):
        load_config(None, ["train.sync_every=0"])
    with pytest.raises(ConfigError, match=r"train\.sync_every: 'often' is not a valid"):
        load_config(None, ["train.sync_every=often"])
    assert load_config(None, []).train.sync_every == "auto"
    assert load_config(None, ["train.sync_every=16"]).train.sync_every == 16
    assert resolve_sync_every("auto", torch.device("cpu")) == 1
    assert resolve_sync_every("auto", torch.device("cuda")) == GPU_SYNC_EVERY == 8
    assert resolve_sync_every(3, torch.device("cuda")) == 3


def test_pending_losses_are_read_in_one_transfer_exactly_as_float_reads_them():
    pending = PendingLosses()
    values = [torch.tensor(1.0 / 3.0), torch.tensor(2.5, dtype=torch.bfloat16), torch.tensor(float("nan"))]
    for i, v in enumerate(values, 1):
        pending.add(i, v.float(), {"a": v, "b": 0.25, "c": torch.tensor(7, dtype=torch.int64)})
    got = pending.read()
    assert len(pending) == 0 and [r.iteration for r in got] == [1, 2, 3]
    for r, v in zip(got, values):
        assert r.loss == float(v.float()) or (r.loss != r.loss and float(v) != float(v))
        assert list(r.terms) == ["a", "b", "c"] and r.terms["b"] == 0.25 and r.terms["c"] == 7.0
    assert got[0].terms["a"] == float(values[0]) and got[1].terms["a"] == float(values[1])
    pending.add(1, torch.tensor(1.0), {})
    pending.add(2, torch.tensor(2.0), {})
    pending.drop_after(1)
    assert [r.iteration for r in pending.read()] == [1]
