"""The README's own-data quick start runs as written: arrays, train, predict, export, PyTorch."""

import os
import re
import subprocess
import sys

from tests.helpers import ROOT


def _block_after(heading: str) -> str:
  text = (ROOT / "README.md").read_text()
  section = text[text.index(heading) :]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_own_data_quick_start_runs_as_written(tmp_path):
  code = _block_after("## Your own data")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  proc = subprocess.run(
    [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
    timeout=600,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-3000:]
  accuracy = float(proc.stdout.split("test accuracy:")[1].split()[0])
  assert accuracy >= 0.7  # the series carry their class: better than chance
  assert (tmp_path / "runs" / "updown" / "summary.json").exists()
