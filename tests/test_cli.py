"""The command line: every subcommand has --help with examples; user errors are one clear line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from occreid.cli.main import build_parser, main

SUBCOMMANDS = [
    ["train"], ["eval"], ["compare"], ["curves"], ["info"], ["demo"],
    ["data", "stats"], ["data", "check"], ["data", "synth"], ["data", "cache"],
    ["labels", "make"], ["labels", "show"],
    ["extract"], ["index", "build"], ["search"], ["export"],
]


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help_with_examples(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "occreid " + cmd[0] in out


def test_all_registered_commands_are_tested():
    parser = build_parser()
    top = parser._subparsers._group_actions[0].choices
    assert set(top) == {c[0] for c in SUBCOMMANDS}


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "occreid", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("occreid ")


def test_stats_json_shape(tiny_market, capsys):
    assert main(["data", "stats", "--dataset", "market1501", "--root", str(tiny_market), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["dataset"] == "market1501"
    assert stats["splits"]["train"] == {"images": 64, "ids": 8, "cams": 2}
    assert stats["splits"]["query"] == {"images": 4, "ids": 4, "cams": 1}
    assert set(stats["splits"]) == {"train", "query", "gallery"}


def test_wrong_root_is_one_clear_line(tmp_path, capsys):
    rc = main(["data", "stats", "--dataset", "occluded_duke", "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("occreid: error:") and "Occluded_Duke" in err
    assert "Traceback" not in err


def test_check_exits_nonzero_on_corrupt_image(tiny_market, tmp_path, capsys):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_market, root)
    victim = next((root / "Market-1501" / "bounding_box_test").glob("*.jpg"))
    victim.write_bytes(victim.read_bytes()[:40])
    rc = main(["data", "check", "--dataset", "market1501", "--root", str(root), "--workers", "1"])
    out = capsys.readouterr().out
    assert rc == 1 and victim.name in out


def test_bad_override_names_key(capsys):
    rc = main(["info", "model.name=bot", "data.heigth=5"])
    assert rc == 2 and "data.heigth" in capsys.readouterr().err


def test_info_reports_parameters_and_macs(capsys):
    rc = main(["info", "--json", "model.backbone=resnet18", "data.height=64", "data.width=32",
               "--num-classes", "10"])
    info = json.loads(capsys.readouterr().out)
    assert rc == 0
    # resnet18 trunk 11,176,512 + BNNeck BN (2 x 512) + classifier 512 x 10 (no bias)
    assert info["parameters"]["total"] == 11_176_512 + 2 * 512 + 512 * 10
    assert info["gmacs"] > 0
