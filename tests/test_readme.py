"""The README's code runs as written and prints what its comments say."""

import os
import re
import subprocess
import sys

from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()


def _blocks() -> list[str]:
  return re.findall(r"```python\n(.*?)```", README, re.S)


def _run(code: str, cwd) -> str:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  proc = subprocess.run(
    [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_the_first_example_runs_and_gives_the_shapes_it_names(tmp_path):
  code = _blocks()[0] + "\nprint(logits_B.shape, y_BTH.shape)"
  assert _run(code, tmp_path).split() == ["(32,)", "(32,", "100,", "64)"]


def test_the_own_data_quick_start_prints_the_accuracy_its_comment_states(tmp_path):
  code = _blocks()[1]
  assert "## Your own data" in README[: README.index(code)]
  stated = re.search(r'print\("test accuracy:".*# ([0-9.]+) \(', code).group(1)
  printed = _run(code, tmp_path).split("test accuracy:")[1].split()[0]
  assert round(float(printed), 6) == float(stated), (printed, stated)
  assert (tmp_path / "runs" / "updown" / "summary.json").exists()
