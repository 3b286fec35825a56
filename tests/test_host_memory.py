"""occreid.host_memory: glibc keeps freed pages (M_MMAP_MAX=0) only with OCCREID_HOST_MALLOC=keep, which
the CLI honours; off by default."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from occreid.host_memory import keep_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")

# Allocate and free a 64 MB tensor 20 times (after 20 rounds of warm-up while the heap grows); with
# per-allocation mappings every round faults its pages in again (about 15,600 minor faults each), with the
# setting the freed pages are reused.
_PROBE = """
import resource, sys, torch
from occreid.host_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "on" else False
torch.set_num_threads(1)
for _ in range(20):
    torch.ones(16_000_000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(16_000_000)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, env: dict | None = None) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
                         env=env).stdout.split()
    return out[0], int(out[1])


def test_freed_pages_are_reused_only_with_the_setting():
    env = {k: v for k, v in os.environ.items() if k != "OCCREID_HOST_MALLOC"}
    applied_off, faults_off = _faults("on", env)  # asked for, but not opted in: the system allocator
    applied_on, faults_on = _faults("on", {**env, "OCCREID_HOST_MALLOC": "keep"})
    assert applied_off == "False" and applied_on == "True"
    assert faults_off > 100_000  # 20 x 64 MB mapped and zero-filled again
    assert faults_on < faults_off / 20


def test_off_unless_asked(monkeypatch):
    monkeypatch.delenv("OCCREID_HOST_MALLOC", raising=False)
    assert keep_freed_memory() is False
    monkeypatch.setenv("OCCREID_HOST_MALLOC", "system")
    assert keep_freed_memory() is False


def test_cli_applies_it(monkeypatch):
    from occreid.cli import main as cli_main

    calls = []
    monkeypatch.setattr("occreid.host_memory.keep_freed_memory", lambda: calls.append(1) or True)
    assert cli_main.main(["info", "--config", "configs/bot/market1501.yaml"]) == 0
    assert calls == [1]
