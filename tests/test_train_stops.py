"""How a training run stops: NaN and exploding losses, Ctrl-C, errors mid-run, resume of a folder
without a checkpoint, an empty query split; each stop saves the last whole iteration and says so."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
import torch

from occreid.config import load_config, save_config
from occreid.engine.checkpoint import load_checkpoint
from occreid.engine.run_dir import RunDir
from occreid.engine.trainer import Trainer, TrainingDiverged, TrainingInterrupted, train, worker_message
from occreid.errors import CheckpointError, ConfigError, DatasetError

from .conftest import write_market


def overrides(root, out, **extra) -> list[str]:
    o = {
        "model.name": "bot", "model.backbone": "osnet_x0_25", "data.dataset": "market1501", "data.root": str(root),
        "data.height": 32, "data.width": 16, "data.ids_per_batch": 4, "data.instances_per_id": 2,
        "data.workers": 0, "train.max_iters": 6, "train.checkpoint_every": 100, "train.log_every": 1,
        "train.warmup_epochs": 1, "run.out": str(out), "run.progress": False,
    }
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


def poison_loss(trainer: Trainer, monkeypatch, at_call: int, factor: float) -> None:
    original = trainer.loss.forward
    calls = {"n": 0}

    def poisoned(out, batch):
        calls["n"] += 1
        total, terms = original(out, batch)
        return (total * factor, terms) if calls["n"] == at_call else (total, terms)

    monkeypatch.setattr(trainer.loss, "forward", poisoned)


def test_nan_stop_saves_exactly_the_state_of_the_last_whole_iteration(tiny_market, tmp_path, monkeypatch):
    """Before: no last.pt (checkpoint_every 100) although the message said one was kept, and the
    message named iteration 3, whose logged loss is finite. The saved BN statistics are those before
    the failed forward, so the file equals an uninterrupted run's state at iteration 3."""
    trainer = Trainer(load_config(None, overrides(tiny_market, tmp_path / "run")))
    poison_loss(trainer, monkeypatch, at_call=4, factor=float("nan"))
    with pytest.raises(TrainingDiverged, match=r"loss became nan at iteration 4 .*last\.pt holds iteration 3, "
                                               r"written at the stop"):
        trainer.fit()
    kept = load_checkpoint(tmp_path / "run" / "last.pt")

    reference = Trainer(load_config(None, overrides(tiny_market, tmp_path / "ref")))
    reference.fit(stop_after=3)
    assert kept["iteration"] == reference.iteration == 3
    for k, v in reference.model.state_dict().items():
        assert torch.equal(kept["model"][k], v), k
    assert not (tmp_path / "run" / ".lock").exists()


def test_an_exploding_finite_loss_stops_at_the_guard_and_can_be_switched_off(tiny_market, tmp_path, monkeypatch):
    """Before: a loss of 1e6 x its usual value trained on, rc 0."""
    trainer = Trainer(load_config(None, overrides(tiny_market, tmp_path / "run")))
    poison_loss(trainer, monkeypatch, at_call=4, factor=1e6)
    with pytest.raises(TrainingDiverged, match=r"at iteration 4 is more than train.loss_guard=1000 times the median "
                                               r".* of the last 3 losses .*last\.pt holds iteration 3"):
        trainer.fit()

    off = Trainer(load_config(None, overrides(tiny_market, tmp_path / "off", **{"train.loss_guard": "null"})))
    poison_loss(off, monkeypatch, at_call=4, factor=1e6)
    assert off.fit().iterations == 6


def test_the_loss_guard_switch_is_validated():
    with pytest.raises(ConfigError, match=r"train.loss_guard: 0.5 is out of range; expected a finite number > 1"):
        load_config(None, ["train.loss_guard=0.5"])
    assert load_config(None, ["train.loss_guard=50"]).train.loss_guard == 50.0


def test_ctrl_c_finishes_the_iteration_saves_and_stops_with_the_signal_code(tiny_market, tmp_path, monkeypatch):
    """Before: KeyboardInterrupt anywhere, and no checkpoint."""
    original = RunDir.log

    def log_then_ctrl_c(self, record):
        original(self, record)
        if record.get("iter") == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(RunDir, "log", log_then_ctrl_c)
    trainer = Trainer(load_config(None, overrides(tiny_market, tmp_path / "run")))
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match=r"SIGINT received: stopped after iteration 2\. The run stopped: "
                                                  r"last\.pt holds iteration 2, written at the stop") as e:
        trainer.fit()
    assert e.value.exit_code == 130
    assert load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # the handlers are restored


def test_an_error_mid_run_saves_the_last_whole_iteration_first(tiny_market, tmp_path, monkeypatch):
    """Before: a bad image stopped the run with no checkpoint."""
    from occreid.data import images

    real = images.read_image
    calls = {"n": 0}

    def fails_in_batch_3(path):
        calls["n"] += 1
        if calls["n"] == 2 * 8 + 3:  # inside the third batch of 8
            raise DatasetError(f"{path}: cannot read image (broken data stream)")
        return real(path)

    monkeypatch.setattr(images, "read_image", fails_in_batch_3)
    trainer = Trainer(load_config(None, overrides(tiny_market, tmp_path / "run")))
    with pytest.raises(DatasetError, match=r"cannot read image .*The run stopped: last\.pt holds iteration 2, "
                                           r"written at the stop\. Continue with `occreid train --resume"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 2


def test_resume_of_a_folder_without_a_checkpoint_is_a_clear_error(tiny_market, tmp_path):
    """Before: it trained from scratch, silently."""
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config(None, overrides(tiny_market, run)), run / "config.yaml")
    with pytest.raises(CheckpointError, match=r"nothing to resume, it has no last\.pt or last\.prev\.pt: the run "
                                              r"stopped before its first checkpoint .*occreid train --config"):
        train(None, [], resume_dir=str(run))
    assert not (run / "last.pt").exists() and not (run / ".lock").exists()
    with pytest.raises(ConfigError, match=r"--resume .*nothing: no config\.yaml there"):
        train(None, [], resume_dir=str(tmp_path / "nothing"))


def test_a_dataset_with_an_empty_query_split_says_the_evaluation_was_skipped(tmp_path, capsys):
    """Before: no evaluation, no word, rc 0."""
    from occreid.cli.main import main

    root = write_market(tmp_path / "data")
    shutil.rmtree(root / "Market-1501" / "query")
    (root / "Market-1501" / "query").mkdir()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}\n")
    rc = main(["train", "--config", str(cfg), *overrides(root, tmp_path / "run", **{"train.max_iters": 1})])
    err = capsys.readouterr().err
    assert rc == 0
    assert "warning: no evaluation after training: data.dataset=market1501 under" in err
    assert "has an empty or absent query split" in err


def test_worker_tracebacks_are_cut_to_the_error_line():
    msg = ("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
           '  File "x.py", line 1, in f\noccreid.errors.DatasetError: /d/a.jpg: cannot read image (truncated)\n')
    assert worker_message(msg) == "/d/a.jpg: cannot read image (truncated)"
    assert worker_message("plain") == "plain"
