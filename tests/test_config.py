"""Typed config: YAML inheritance, dotted overrides, validation messages naming the bad key."""

from pathlib import Path

import pytest
import yaml

from occreid.config import config_hash, load_config, save_config, to_dict
from occreid.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_overrides_are_typed_and_applied():
    cfg = load_config(None, ["data.height=192", "train.lr=1e-3", "data.test_datasets=[partial_reid, occluded_reid]",
                             "train.max_iters=null", "eval.rerank=true"])
    assert cfg.data.height == 192 and isinstance(cfg.data.height, int)
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.data.test_datasets == ["partial_reid", "occluded_reid"]
    assert cfg.train.max_iters is None
    assert cfg.eval.rerank is True


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("data.heigth=10", "data.heigth"),
        ("data.height=tall", "data.height"),
        ("train.optimizer=rmsprop", "train.optimizer"),
        ("model.name=nonexistent", "model.name"),
        ("method.no_such_option=1", "method.no_such_option"),
        ("eval.rerank=maybe", "eval.rerank"),
        ("bogus.key=1", "bogus"),
    ],
)
def test_validation_names_the_bad_key(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert fragment in str(e.value)


def test_literal_error_lists_allowed_values():
    with pytest.raises(ConfigError, match="adam"):
        load_config(None, ["train.optimizer=rmsprop"])


def test_base_inheritance_and_override_order(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"data": {"height": 100, "width": 50}, "train": {"lr": 0.1}}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"_base_": "a.yaml", "data": {"height": 200}}))
    cfg = load_config(tmp_path / "b.yaml", ["train.lr=0.5"])
    assert (cfg.data.height, cfg.data.width, cfg.train.lr) == (200, 50, 0.5)


def test_saved_config_round_trips_and_hash_is_stable(tmp_path):
    cfg = load_config(CONFIGS / "bot" / "occluded_duke.yaml", ["model.backbone=resnet18"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert to_dict(again) == to_dict(cfg)
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(load_config(tmp_path / "config.yaml", ["train.lr=1"])) != config_hash(cfg)


def test_missing_config_file_is_clear():
    with pytest.raises(ConfigError, match="not found"):
        load_config("no/such/file.yaml")


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.rglob("*.yaml") if p.name != "base.yaml"),
                         ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.model.name
    assert cfg.data.dataset
