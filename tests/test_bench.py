"""scripts/bench.py: argument checks, the lease budget (--until), the autodiff variant."""

import argparse
import json
import os
import subprocess
import sys
import time
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
  assert "failed: []; skipped (--until budget): [('seed_clf', 'ours')" in proc.stderr
  results = json.loads(out.read_text())["results"]
  assert [(r["config"], r["ours"], r["flax"], r["skipped"]) for r in results] == [
    ("seed_clf", None, None, ["ours", "flax"]),
    ("zaremba_medium", None, None, ["ours", "flax"]),
  ]
  assert proc.stdout.count("| skipped | skipped |") == 2


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
  bench = _bench_module()

  outcomes = {
    "ours": [{"ms": 2.0}, {"ms": 4.0}, bench.SKIPPED],
    "flax": [{"ms": 9.0}, None, None],
    "ours-scan": [bench.SKIPPED] * 3,
  }

  def fake_spawn(args, name, impl, seeds):
    r = outcomes[impl].pop(0)
    return (
      r
      if r in (None, bench.SKIPPED)
      else dict(r, compile_s=0.0, peak_mb=None, devices=1, device="cpu")
    )

  monkeypatch.setattr(bench, "_spawn", fake_spawn)
  out = tmp_path / "b.json"
  impls = ["--impls", "ours", "flax", "ours-scan"]
  args = ["--configs", "seed_clf", *impls, "--rounds", "3", "--json", str(out)]
  with pytest.raises(SystemExit) as stop:
    bench.main(args)
  assert str(stop.value) == (
    "failed: [('seed_clf', 'flax')]; skipped (--until budget): [('seed_clf', 'ours-scan')]"
  )
  (row,) = json.loads(out.read_text())["results"]
  assert row["ours"]["ms"] == 3.0 and row["ours"]["ms_rounds"] == [2.0, 4.0]
  assert row["flax"] is None and row["ours-scan"] is None and row["skipped"] == ["ours-scan"]
  assert "| seed_clf | 3.000 (2/3 rounds) | failed | skipped |" in capsys.readouterr().out


def _bench_module():
  sys.path.insert(0, str(BENCH.parent))
  import bench

  return bench


def test_measurement_timeout_keeps_to_the_budget_and_its_grace():
  bench = _bench_module()
  args = argparse.Namespace(timeout=1200, until=None, grace=60)
  assert bench.measurement_timeout(args, now=5.0) == 1200
  args.until = 100.0
  assert bench.measurement_timeout(args, now=50.0) == 110.0  # to until + grace
  assert bench.measurement_timeout(args, now=100.0) is None  # budget spent: not started
  args.grace = 0
  assert bench.measurement_timeout(args, now=99.5) == 0.5
  args.timeout, args.grace = 20, 60
  assert bench.measurement_timeout(args, now=50.0) == 20  # --timeout still caps it


def _spawn_args(**kw):
  bench = _bench_module()
  p = dict(
    device="cpu",
    dtype="float32",
    precision="tf32",
    warmup=0,
    steps=1,
    repeats=1,
    unroll=None,
    shard=[],
    cpu_devices=None,
    malloc="default",
    timeout=1200,
    until=None,
    grace=60,
  )
  return bench, argparse.Namespace(**{**p, **kw})


def test_spawn_passes_precision_and_the_budgeted_timeout_to_the_child(monkeypatch):
  bench, args = _spawn_args(until=time.time() + 100, grace=10)
  seen = {}

  def fake_run(cmd, timeout, **kw):
    seen["cmd"], seen["timeout"] = cmd, timeout
    return subprocess.CompletedProcess(cmd, 0, stdout='RESULT {"ms": 1.5}\n', stderr="")

  monkeypatch.setattr(bench.subprocess, "run", fake_run)
  assert bench._spawn(args, "seed_clf", "ours", 1) == {"ms": 1.5}
  cmd = seen["cmd"]
  assert cmd[cmd.index("--precision") + 1] == "tf32"
  assert 100 < seen["timeout"] <= 110


def test_a_run_stopped_by_the_budget_is_skipped_one_too_slow_by_itself_fails(monkeypatch):
  def too_slow(cmd, timeout, **kw):
    raise subprocess.TimeoutExpired(cmd, timeout)

  bench, args = _spawn_args(until=time.time() + 5, grace=5)
  monkeypatch.setattr(bench.subprocess, "run", too_slow)
  assert bench._spawn(args, "seed_clf", "ours", 1) is bench.SKIPPED
  args.until = None
  assert bench._spawn(args, "seed_clf", "ours", 1) is None


def test_set_precision_sets_jax_and_leaves_the_default_alone():
  import jax

  bench = _bench_module()
  before = jax.config.jax_default_matmul_precision
  try:
    bench._set_precision("ours", "default")
    assert jax.config.jax_default_matmul_precision == before
    bench._set_precision("ours", "highest")
    assert jax.config.jax_default_matmul_precision == "highest"
    bench._set_precision("flax", "tf32")
    assert jax.config.jax_default_matmul_precision == "tensorfloat32"
  finally:
    jax.config.update("jax_default_matmul_precision", before)
