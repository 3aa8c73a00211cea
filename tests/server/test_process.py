"""The process around the servers: flags map to settings, the allocator setting takes effect."""

import platform
import subprocess
import sys

import pytest

from perceiver_serve.allocator import fix_mmap_threshold
from perceiver_serve.cli import parser
from perceiver_serve.settings import Settings


def test_every_setting_has_a_flag_and_every_flag_a_setting():
    flags = {action.dest for action in parser()._actions if action.dest not in ("help", "version", "command")}
    assert flags == set(Settings.model_fields)


def test_malloc_threshold_flag_and_environment(monkeypatch):
    args = vars(parser().parse_args(["--malloc-mmap-threshold-mb", "8"]))
    assert Settings(**{k: v for k, v in args.items() if k != "command"}).malloc_mmap_threshold_mb == 8
    monkeypatch.setenv("PERCEIVER_MALLOC_MMAP_THRESHOLD_MB", "0")
    assert Settings().malloc_mmap_threshold_mb == 0
    with pytest.raises(ValueError):
        Settings(malloc_mmap_threshold_mb=-1)


def test_zero_leaves_the_allocator_alone():
    assert fix_mmap_threshold(0) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_threshold_is_fixed_on_glibc():
    # In a child process, so this test process keeps its allocator as it was.
    code = "from perceiver_serve.allocator import fix_mmap_threshold as f; print(f(4 << 20))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "True"
