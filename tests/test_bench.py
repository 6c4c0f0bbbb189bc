"""scripts/bench.py refuses bad arguments before timing anything."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


@pytest.mark.parametrize(
  "args, message",
  [
    (["--rounds", "0"], "--rounds must be >= 1, got 0"),
    (["--cpu-devices", "0"], "--cpu-devices must be >= 1, got 0"),
    (["--shard", "torch"], "argument --shard: invalid choice: 'torch'"),
  ],
)
def test_bad_arguments_are_refused_with_their_reason(args, message):
  proc = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True)
  assert proc.returncode == 2
  assert message in proc.stderr
