"""`occreid curves`: which logged quantities become panels, the centred smoothing against a direct
recomputation, a log cut short by a kill, and clear errors for folders without a log."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from occreid.cli.main import main
from occreid.engine.training_curves import centred_mean, curve_panels, plot_training_curves, read_log
from occreid.errors import ConfigError


def _log(folder, terms, iters=40, val_every=20, cut=False):
    folder.mkdir(parents=True)
    lines = []
    for it in range(1, iters + 1):
        rec = {"time": 1.0 * it, "iter": it, "epoch": it / 10, "lr": 1e-3, "loss": 10.0 / it, "train_s": 0.5 * it}
        rec.update({t: float(k + it) for k, t in enumerate(terms)})
        lines.append(json.dumps(rec))
        if it % val_every == 0:
            lines.append(json.dumps({"time": 1.0, "iter": it, "val_rank1": 0.5, "val_mAP": 0.25 + it / 1000}))
    text = "\n".join(lines) + "\n"
    if cut:
        text += '{"iter": 41, "loss": 0.'  # killed mid-write
    (folder / "metrics.jsonl").write_text(text)
    return folder


def test_panels_follow_the_logged_terms_of_every_run(tmp_path):
    a = read_log(_log(tmp_path / "pan", ["ce_global", "ce_local", "triplet"]))
    b = read_log(_log(tmp_path / "bot", ["ce", "triplet", "center"], val_every=100))
    assert curve_panels([a, b]) == ["loss", "ce_global", "ce_local", "triplet", "ce", "center", "lr",
                                    "val_mAP", "val_rank1"]
    assert curve_panels([b]) == ["loss", "ce", "triplet", "center", "lr"]  # no validation logged
    it, v = a["val_mAP"]
    assert it.tolist() == [20, 40] and v.tolist() == [0.27, 0.29]
    assert "time" not in a and "epoch" not in a and "train_s" not in a
    assert a["ce_local"][1][:3].tolist() == [2.0, 3.0, 4.0]


def test_centred_mean_against_a_direct_window():
    rng = np.random.default_rng(0)
    v = rng.random(23)
    for w in (1, 2, 5, 9, 40):
        direct = [v[max(0, i - (w - 1) // 2): i + w // 2 + 1].mean() for i in range(v.size)]
        assert centred_mean(v, w) == pytest.approx(direct)
    falling = np.arange(100, 0, -1.0)
    assert centred_mean(falling, 9)[4:-4] == pytest.approx(falling[4:-4])  # no lag on a straight line


def test_picture_and_cli(tmp_path, capsys):
    _log(tmp_path / "a", ["ce", "triplet"], cut=True)
    _log(tmp_path / "b", ["ce"])
    assert read_log(tmp_path / "a")["loss"][0].max() == 40  # the cut line is skipped
    out = plot_training_curves([tmp_path / "a", tmp_path / "b"], tmp_path / "c.png", labels=["A", "B"])
    with Image.open(out) as im:
        assert im.size[0] > 600 and im.size[1] > 300
    assert main(["curves", str(tmp_path / "a"), str(tmp_path / "b" / "metrics.jsonl"),
                 "--out", str(tmp_path / "d.png"), "--smooth", "1"]) == 0
    assert (tmp_path / "d.png").is_file() and capsys.readouterr().out.strip().endswith("d.png")


def test_bad_input_names_the_file_and_the_fix(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no training log"):
        read_log(tmp_path / "empty")
    (tmp_path / "empty" / "metrics.jsonl").write_text('{"time": 1}\n')
    with pytest.raises(ConfigError, match="no logged iterations"):
        read_log(tmp_path / "empty")
    _log(tmp_path / "a", ["ce"])
    with pytest.raises(ConfigError, match="one label per run"):
        plot_training_curves([tmp_path / "a"], tmp_path / "x.png", labels=["x", "y"])
    assert main(["curves", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err
    assert main(["curves", str(tmp_path / "a"), "--smooth", "0"]) == 2
    assert "--smooth 0" in capsys.readouterr().err
