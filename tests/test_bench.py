"""scripts/bench.py: argument checks, the lease budget (--until), the autodiff variant."""

import json
import os
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


def test_bad_grace_and_precision_are_refused():
  proc = subprocess.run(
    [sys.executable, str(BENCH), "--grace", "-1"], capture_output=True, text=True
  )
  assert proc.returncode == 2 and "--grace must be >= 0 seconds, got -1.0" in proc.stderr
  proc = subprocess.run(
    [sys.executable, str(BENCH), "--precision", "fp16"], capture_output=True, text=True
  )
  assert proc.returncode == 2 and "argument --precision: invalid choice: 'fp16'" in proc.stderr


def test_until_in_the_past_skips_every_measurement_and_says_so(tmp_path):
  """A lease's budget spent: nothing runs, each skip is reported, the JSON still written."""
  out = tmp_path / "bench.json"
  args = ["--configs", "seed_clf", "zaremba_medium", "--impls", "ours", "flax"]
  proc = subprocess.run(
    [sys.executable, str(BENCH), *args, "--until", "0", "--json", str(out)],
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode == 1
  assert proc.stderr.count("skipped (--until reached)") == 4
  assert "failed or skipped" in proc.stderr
  results = json.loads(out.read_text())["results"]
  assert [(r["config"], r["ours"], r["flax"]) for r in results] == [
    ("seed_clf", None, None),
    ("zaremba_medium", None, None),
  ]


def test_autodiff_variant_runs_one_timed_step():
  """ours-scan (impl="scan") builds and times the same model as ours."""
  args = ["--single", "--impl", "ours-scan", "--configs", "seed_clf"]
  proc = subprocess.run(
    [sys.executable, str(BENCH), *args, "--warmup", "0", "--steps", "1", "--repeats", "1"],
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(proc.stdout.split("RESULT ", 1)[1])
  assert result["ms"] > 0 and result["devices"] == 1


def test_rounds_cut_short_by_until_report_the_rounds_done(tmp_path, monkeypatch, capsys):
  """Rounds the budget skipped are left out of the median and shown; a failed round fails."""
  sys.path.insert(0, str(BENCH.parent))
  import bench

  outcomes = {"ours": [{"ms": 2.0}, {"ms": 4.0}, bench.SKIPPED], "flax": [{"ms": 9.0}, None, None]}

  def fake_spawn(args, name, impl, seeds):
    r = outcomes[impl].pop(0)
    return (
      r
      if r in (None, bench.SKIPPED)
      else dict(r, compile_s=0.0, peak_mb=None, devices=1, device="cpu")
    )

  monkeypatch.setattr(bench, "_spawn", fake_spawn)
  out = tmp_path / "b.json"
  args = ["--configs", "seed_clf", "--impls", "ours", "flax", "--rounds", "3", "--json", str(out)]
  with pytest.raises(SystemExit, match="failed or skipped"):
    bench.main(args)
  (row,) = json.loads(out.read_text())["results"]
  assert row["ours"]["ms"] == 3.0 and row["ours"]["ms_rounds"] == [2.0, 4.0]
  assert row["flax"] is None
  assert "| seed_clf | 3.000 (2/3 rounds) | failed |" in capsys.readouterr().out
