"""Numeric config ranges: an out-of-range value is a ConfigError naming the key, the value and the range,
both through `load_config` and through the CLI (one line, no traceback)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from occreid.config import load_config
from occreid.config.ranges import NonNegativeInt, PositiveInt, Probability, Range
from occreid.config.typed import build
from occreid.errors import ConfigError


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("data.height=-5", "an integer >= 1"),
        ("data.width=0", "an integer >= 1"),
        ("train.lr=-1", "a finite number >= 0"),
        ("train.weight_decay=-1", "a finite number >= 0"),
        ("data.workers=-1", "an integer >= 0"),
        ("data.ids_per_batch=0", "an integer >= 1"),
        ("data.flip_prob=1.5", "a finite number in [0, 1]"),
        ("data.erasing_prob=-0.1", "a finite number in [0, 1]"),
        ("data.std=[0.2, 0.0, 0.2]", "a finite number > 0"),
        ("train.momentum=2", "a finite number in [0, 1]"),
        ("train.milestones=[10, -3]", "a finite number >= 0"),
        ("train.gamma=0", "a finite number > 0"),
        ("train.max_iters=0", "an integer >= 1"),
        ("train.grad_clip=-2", "a finite number > 0"),
        ("train.accum_steps=0", "an integer >= 1"),
        ("train.seed=-1", "an integer >= 0"),
        ("train.lr=.inf", "a finite number >= 0"),
        ("model.last_stride=3", "an integer in [1, 2]"),
        ("eval.k1=0", "an integer >= 1"),
        ("eval.lambda_value=1.2", "a finite number in [0, 1]"),
    ],
)
def test_out_of_range_names_key_value_and_range(override, allowed):
    key, value = override.split("=", 1)
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert msg.startswith(key) and "out of range" in msg and allowed in msg, msg


def test_boundaries_and_null_are_accepted():
    cfg = load_config(None, ["data.workers=0", "train.lr=0", "data.flip_prob=1", "data.erasing_prob=0",
                             "train.max_iters=null", "train.grad_clip=null", "model.last_stride=2"])
    assert (cfg.data.workers, cfg.train.lr, cfg.data.flip_prob, cfg.train.max_iters) == (0, 0.0, 1.0, None)


def test_ranges_apply_to_any_dataclass_built_from_a_dict():
    @dataclass
    class Options:
        parts: PositiveInt = 6
        skip: NonNegativeInt = 0
        mu: Probability = 0.5

    assert build(Options, {"parts": 3, "mu": 1}).mu == 1.0
    with pytest.raises(ConfigError, match=r"method\.mu: 1\.5 is out of range; expected a finite number in \[0, 1\]"):
        build(Options, {"mu": 1.5}, "method")


def test_range_words():
    assert Range(low=0, low_open=True).describe(integer=True) == "an integer >= 1"
    assert Range(low=0, low_open=True).describe(integer=False) == "a finite number > 0"
    assert Range(low=0, high=1, high_open=True).describe(integer=False) == "a finite number in [0, 1)"
    assert not Range(low=0).contains(float("nan"))


def test_cli_prints_one_line_for_a_negative_height(capsys):
    from occreid.cli.main import main

    config = Path(__file__).resolve().parents[1] / "configs" / "bot" / "synthetic.yaml"
    assert main(["train", "--config", str(config), "data.height=-5", "--no-eval"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["occreid: error: data.height: -5 is out of range; expected an integer >= 1"]
