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


def test_hash_ignores_keys_at_their_default_so_new_schema_keys_keep_old_hashes(tmp_path):
    cfg = load_config(CONFIGS / "bot" / "occluded_duke.yaml")
    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del saved["data"]["decode_cache"], saved["train"]["sync_every"]  # as a config saved before these keys
    del saved["method"]["center_lr"]  # a method option added later, likewise
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(saved))
    assert config_hash(load_config(tmp_path / "old.yaml")) == config_hash(cfg)
    # a default written out explicitly is the same config; a non-default value is not
    assert config_hash(load_config(None, ["data.decode_cache=auto"])) == config_hash(load_config(None))
    assert config_hash(load_config(None, ["data.decode_cache=false"])) != config_hash(load_config(None))
    assert config_hash(load_config(None, ["method.center_weight=0"])) != config_hash(load_config(None))


def test_feature_settings_diff_names_only_feature_keys():
    from occreid.config import feature_settings_diff

    a = to_dict(load_config(None, ["model.name=pcb", "method.stripes=6"]))
    b = to_dict(load_config(None, ["model.name=pcb", "method.stripes=6", "data.workers=0", "run.out=x",
                                   "train.lr=1", "model.pretrained_path=imagenet", "data.root=/elsewhere"]))
    assert feature_settings_diff(a, b) == []
    c = to_dict(load_config(None, ["model.name=pcb", "method.stripes=4", "data.height=192", "eval.flip=true"]))
    assert feature_settings_diff(a, c) == ["data.height: 256 vs 192", "method.stripes: 6 vs 4",
                                           "eval.flip: False vs True"]
    older = dict(a, method={"stripes": 6})  # saved before the other options existed: their defaults count
    assert feature_settings_diff(a, older) == []
    assert feature_settings_diff(dict(a, method={"stripes": 6, "dropout": 0.3}), older) == [
        "method.dropout: 0.3 vs 0.5"]
