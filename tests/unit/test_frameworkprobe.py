"""The framework probe (nbinit.frameworkprobe) as nbinit runs it: the image's Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from nbinit import frameworkprobe, runtime

FAKE_TORCH = """
__version__ = "2.4.0"
class cuda:
    is_available = staticmethod(lambda: True)
    device_count = staticmethod(lambda: 3)
class version:
    cuda = "12.4"
"""


def probe(name: str, pythonpath: str) -> dict:
    result = subprocess.run(
        [*runtime.foreign_module_command([sys.executable], "nbinit.frameworkprobe"), name],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": pythonpath},
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[-1]
    assert line.startswith(frameworkprobe.PREFIX)
    return json.loads(line[len(frameworkprobe.PREFIX) :])


def test_the_images_framework_answers(tmp_path):
    (tmp_path / "torch.py").write_text(FAKE_TORCH)
    assert probe("torch", str(tmp_path)) == {"version": "2.4.0", "count": 3, "cuda": "12.4"}


def test_a_missing_framework_is_reported_not_raised(tmp_path):
    answer = probe("tensorflow", str(tmp_path))
    assert answer["error"].startswith("not importable (No module named 'tensorflow'")
