"""Devices: data parallel and runs parallel on 4 CPU devices equal 1 device.

The 4-device side runs in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (the flag must be set
before JAX starts); this process has one CPU device.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from lstmdrop_jax.checkpoint import RunCheckpoints
from lstmdrop_jax.dropout import DropoutConfig
from lstmdrop_jax.run_folder import read_jsonl
from lstmdrop_jax.train import Config, train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]
BASE = Config(
  dataset="synthetic",
  hidden=8,
  layers=2,
  # Every kind of mask: per step, per sequence, in the cell.
  dropout=DropoutConfig(
    input=0.1, between=0.3, output=0.3, recurrent=0.2, zoneout_h=0.1, semeniuta=0.2, rnndrop=0.1
  ),
  epochs=4,
  batch_size=16,
  checkpoint_every=2,
  keep_checkpoints=3,
  learning_rate=3e-3,
  unroll=1,
)
SEEDS = [
  dataclasses.replace(BASE, epochs=2, seed=s, dropout=DropoutConfig(output=0.1 * s))
  for s in range(4)
]

SCRIPT = """
import dataclasses, json, sys
import jax
from lstmdrop_jax.train import Config, train_and_evaluate, train_runs
root = sys.argv[1]
base = Config.from_dict(json.loads(sys.argv[2]))
seeds = [Config.from_dict(d) for d in json.loads(sys.argv[3])]
assert jax.device_count() == 4, jax.devices()
train_and_evaluate(base, f"{root}/dp4", progress=False)
train_runs(seeds, [f"{root}/runs4/{k}" for k in range(4)], parallel="runs", progress=False)
errors = {}
for name, call in {
    "batch": lambda: train_and_evaluate(dataclasses.replace(base, batch_size=10), f"{root}/bad1"),
    "runs": lambda: train_runs(seeds[:3], [f"{root}/bad2/{k}" for k in range(3)], parallel="runs"),
}.items():
  try:
    call()
  except ValueError as e:
    errors[name] = str(e)
print("ERRORS " + json.dumps(errors))
"""


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
  root = tmp_path_factory.mktemp("four")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
  args = [json.dumps(BASE.to_dict()), json.dumps([c.to_dict() for c in SEEDS])]
  proc = subprocess.run(
    [sys.executable, "-c", textwrap.dedent(SCRIPT), str(root), *args],
    env=env, capture_output=True, text=True, timeout=600, cwd=ROOT,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("ERRORS "))
  return root, json.loads(line[len("ERRORS ") :])


def _params(workdir, epoch=None):
  ckpt = RunCheckpoints(workdir)
  try:
    state, _ = ckpt.restore(epoch=epoch)
  finally:
    ckpt.close()
  return state["params"]


def _close(a, b):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a, b)


def test_four_devices_equal_one_device(four_devices, tmp_path):
  root, _ = four_devices
  train_and_evaluate(BASE, tmp_path / "dp1", progress=False)
  _close(_params(root / "dp4"), _params(tmp_path / "dp1"))
  ev = lambda d: [r for r in read_jsonl(d / "metrics.jsonl") if r.get("event") == "eval"]
  for a, b in zip(ev(root / "dp4"), ev(tmp_path / "dp1"), strict=True):
    np.testing.assert_allclose(a["val/loss"], b["val/loss"], rtol=1e-5)


def test_checkpoint_from_four_devices_resumes_on_one(four_devices, tmp_path):
  root, _ = four_devices
  run = tmp_path / "run"
  shutil.copytree(root / "dp4", run)
  # As if the 4-device run had been killed right after its epoch-2 checkpoint.
  for sub in ("last", "best"):
    for p in (run / "checkpoints" / sub).iterdir():
      if p.name.isdigit() and int(p.name) > 2:
        shutil.rmtree(p)
  (run / "summary.json").unlink()
  summary = train_and_evaluate(BASE, run, progress=False)
  assert summary["epochs"] == 4
  _close(_params(run), _params(root / "dp4"))


def test_runs_sharded_over_devices_equal_each_run_alone(four_devices, tmp_path):
  root, _ = four_devices
  for k, c in enumerate(SEEDS):
    train_and_evaluate(c, tmp_path / str(k), progress=False)
    _close(_params(root / "runs4" / str(k)), _params(tmp_path / str(k)))


def test_indivisible_layouts_get_clear_errors(four_devices):
  _, errors = four_devices
  assert "batch_size 10 is not divisible by the 4 devices" in errors["batch"]
  assert "use a multiple of 4 (e.g. 12)" in errors["batch"]
  assert "3 runs cannot be split over 4 devices" in errors["runs"]


_ALLOCATOR_PROBE = """
import json, sys
import jax, numpy as np
from lstmdrop_jax import parallel
from lstmdrop_jax.checkpoint import RunCheckpoints
from lstmdrop_jax.train import Config, train_and_evaluate
from lstmdrop_jax.host_memory import keep_freed_host_memory
applied = keep_freed_host_memory()
train_and_evaluate(Config(dataset="synthetic", hidden=8, epochs=1, batch_size=16), sys.argv[1])
state, _ = RunCheckpoints(sys.argv[1]).restore()
sums = [float(np.asarray(p, np.float64).sum()) for p in jax.tree.leaves(state["params"])]
print(json.dumps({"applied": applied, "sums": sums}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_keep_freed_host_memory_applies_and_changes_no_result(tmp_path):
  out = {}
  for flag in ("0", "1"):
    env = dict(os.environ, LSTMDROP_NO_MALLOPT=flag, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
      [sys.executable, "-c", _ALLOCATOR_PROBE, str(tmp_path / flag)],
      capture_output=True,
      text=True,
      env=env,
      cwd=ROOT,
      check=True,
    )
    out[flag] = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["0"]["applied"] is True and out["1"]["applied"] is False
  assert out["0"]["sums"] == out["1"]["sums"]


_CPU_DEVICES_PROBE = """
import json
from lstmdrop_jax import parallel
parallel.use_cpu_devices(2)
import jax
count = jax.device_count()
try:
  parallel.use_cpu_devices(3)  # too late: JAX has started
  late = None
except ValueError as e:
  late = str(e)
print(json.dumps({"count": count, "late": late}))
"""


def test_use_cpu_devices_splits_the_cpu_and_refuses_to_come_late():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
    [sys.executable, "-c", _CPU_DEVICES_PROBE], capture_output=True, text=True, env=env, cwd=ROOT
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["count"] == 2
  assert "too late" in out["late"] and "before any JAX operation" in out["late"]
  for bad in (0, -1, 1.5, True):
    with pytest.raises(ValueError, match="cpu_devices must be an int >= 1"):
      from lstmdrop_jax import parallel

      parallel.use_cpu_devices(bad)


def test_cli_cpu_devices_takes_effect_and_bad_layouts_write_nothing(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
  cli = [sys.executable, "-m", "lstmdrop_jax.train", "--dataset", "synthetic", "--epochs", "1"]
  # 15 rows cannot be split over the 2 devices the flag makes: refused up front.
  workdir = tmp_path / "odd"
  proc = subprocess.run(
    [*cli, "--workdir", str(workdir), "--cpu-devices", "2", "--batch-size", "15"],
    capture_output=True, text=True, env=env, cwd=ROOT,
  )  # fmt: skip
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "not divisible by the 2 devices" in proc.stderr
  assert not workdir.exists()
  proc = subprocess.run(
    [*cli, "--workdir", str(workdir), "--cpu-devices", "0"], capture_output=True, text=True, env=env
  )
  assert proc.returncode == 2 and "cpu_devices must be an int >= 1" in proc.stderr
  assert not workdir.exists()


def test_overfit_refuses_an_unsplittable_grid_before_writing(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  out = tmp_path / "grid"
  script = str(ROOT / "experiments" / "overfit.py")
  proc = subprocess.run(
    [sys.executable, script, "--dataset", "synthetic", "--quick", "--cpu-devices", "4",
     "--parallel", "runs", "--out", str(out)],
    capture_output=True, text=True, env=env, cwd=ROOT,
  )  # fmt: skip
  assert proc.returncode != 0
  assert "error: 18 runs cannot be split over 4 devices" in proc.stderr, proc.stderr[-2000:]
  assert not out.exists()
