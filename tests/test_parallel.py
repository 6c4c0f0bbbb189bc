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

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstmdrop_jax.dropout import DropoutConfig
from lstmdrop_jax.run_folder import read_jsonl
from lstmdrop_jax.train import Config, train_and_evaluate, train_runs
from tests.conftest import ALL_CORES, SMALL_RUN
from tests.helpers import ROOT, assert_trees_close, restored_params, write_corpus

BASE = dataclasses.replace(
  SMALL_RUN,
  # Every kind of mask: per step, per sequence, in the cell.
  dropout=DropoutConfig(
    input=0.1, between=0.3, output=0.3, recurrent=0.2, zoneout_h=0.1, semeniuta=0.2, rnndrop=0.1
  ),
  keep_checkpoints=3,
  seed=0,
)
SEEDS = [
  dataclasses.replace(BASE, epochs=2, seed=s, dropout=DropoutConfig(output=0.1 * s))
  for s in range(3)
]

# A language model with every mask a batch has: per step, per sequence, whole words.
LM = Config(
  dataset="text", hidden=8, layers=2, num_steps=6, batch_size=8, optimizer="adam",
  learning_rate=1e-2, epochs=2, unroll=1,
  dropout=DropoutConfig(input=0.2, between=0.2, output=0.2, recurrent=0.2, embedding=0.1),
)  # fmt: skip

SCRIPT = """
import dataclasses, json, sys
import jax
from lstmdrop_jax.train import Config, train_and_evaluate, train_runs
root = sys.argv[1]
base = Config.from_dict(json.loads(sys.argv[2]))
seeds = [Config.from_dict(d) for d in json.loads(sys.argv[3])]
lm = Config.from_dict(json.loads(sys.argv[4]))
assert jax.device_count() == 4, jax.devices()
train_and_evaluate(base, f"{root}/dp4", progress=False)
train_runs([lm], [f"{root}/lm4"], parallel="data", progress=False)
# 3 runs on 4 devices: padded with a copy of the first run, which writes nothing.
train_runs(seeds, [f"{root}/runs3/{k}" for k in range(3)], parallel="runs", progress=False)
errors = {}
try:
  train_runs([dataclasses.replace(base, batch_size=10)], [f"{root}/bad1"], parallel="data")
except ValueError as e:
  errors["batch"] = str(e)
from lstmdrop_jax import parallel
plans = {
  f"{kind} {runs}x{batch}": parallel.plan("auto", runs=runs, batch_size=batch, split_pays=pays)
  for kind, pays in (("clf", True), ("lm", False)) for runs, batch in ((5, 16), (2, 16), (1, 6))
}
print("PLANS " + json.dumps({k: [mode, mesh.size] for k, (mode, mesh) in plans.items()}))
# A single run the CLI's way: 'auto' splits a batch of 6 over the 3 devices that divide it.
train_and_evaluate(dataclasses.replace(seeds[1], batch_size=6), f"{root}/auto6", progress=False)
print("ERRORS " + json.dumps(errors))
"""


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
  root = tmp_path_factory.mktemp("four")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
  lm = dataclasses.replace(LM, data_dir=str(write_corpus(root / "corpus")))
  args = [json.dumps(c.to_dict()) for c in (BASE, lm)]
  args.insert(1, json.dumps([c.to_dict() for c in SEEDS]))
  proc = subprocess.run(
    [sys.executable, "-c", textwrap.dedent(SCRIPT), str(root), *args],
    env=env, capture_output=True, text=True, timeout=600, cwd=ROOT,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = {
    ln.split(" ", 1)[0]: json.loads(ln.split(" ", 1)[1])
    for ln in proc.stdout.splitlines()
    if ln.startswith(("ERRORS ", "PLANS "))
  }
  return root, out["ERRORS"], out["PLANS"], lm


def test_four_devices_equal_one_device(four_devices, tmp_path):
  root, *_ = four_devices
  train_and_evaluate(BASE, tmp_path / "dp1", progress=False)
  assert_trees_close(restored_params(root / "dp4"), restored_params(tmp_path / "dp1"))
  ev = lambda d: [r for r in read_jsonl(d / "metrics.jsonl") if r.get("event") == "eval"]
  for a, b in zip(ev(root / "dp4"), ev(tmp_path / "dp1"), strict=True):
    np.testing.assert_allclose(a["val/loss"], b["val/loss"], rtol=1e-5)


def test_a_language_model_split_over_four_devices_equals_one_device(four_devices, tmp_path):
  """Each device trains on its rows of the batch and draws its rows of the whole
  batch's masks; the carry stays split with the streams."""
  root, *_, lm = four_devices
  train_runs([lm], [tmp_path / "lm1"], parallel="data", progress=False)
  assert_trees_close(restored_params(root / "lm4"), restored_params(tmp_path / "lm1"))
  for name in ("metrics.jsonl", "summary.json"):
    assert (root / "lm4" / name).exists()
  ev = lambda d: [r["val/ppl"] for r in read_jsonl(d / "metrics.jsonl") if r.get("event") == "eval"]
  np.testing.assert_allclose(ev(root / "lm4"), ev(tmp_path / "lm1"), rtol=1e-5)


def test_checkpoint_from_four_devices_resumes_on_one(four_devices, tmp_path):
  root, *_ = four_devices
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
  assert_trees_close(restored_params(run), restored_params(root / "dp4"))


def test_an_indivisible_batch_gets_a_clear_error(four_devices):
  _, errors, *_ = four_devices
  assert "batch_size 10 is not divisible by the 4 devices" in errors["batch"]
  assert "use a multiple of 4 (e.g. 12)" in errors["batch"]


def test_runs_sharded_and_padded_over_devices_equal_the_group_on_one_device(four_devices, tmp_path):
  """3 runs on 4 devices, one run per device and a pad run, against the same group
  on one device (which equals each run alone: test_groups.py)."""
  root, *_ = four_devices
  assert sorted(p.name for p in (root / "runs3").iterdir()) == ["0", "1", "2"]
  one = [tmp_path / str(k) for k in range(3)]
  train_runs(SEEDS, one, progress=False)
  for k in range(3):
    # Whole runs per device compute what one device computes, up to float rounding
    # (XLA compiles a device's loop over its share of the runs on its own).
    assert_trees_close(restored_params(root / "runs3" / str(k)), restored_params(one[k]))
    got, want = (read_jsonl(d / "metrics.jsonl") for d in (root / "runs3" / str(k), one[k]))
    # One record per epoch and evaluation: the pad logged nothing into run 0's folder.
    events = lambda recs: [(r["epoch"], r.get("event")) for r in recs]
    assert events(got) == events(want)
    assert got[-1]["val/accuracy"] == want[-1]["val/accuracy"]


def test_auto_gives_cores_whole_runs_or_splits_a_classifiers_batch(four_devices, tmp_path):
  root, _, plans, _ = four_devices
  assert plans == {
    "clf 5x16": ["runs", 4],  # padded to 8
    "clf 2x16": ["data", 4],
    "clf 1x6": ["data", 3],  # the most devices that divide the batch
    "lm 5x16": ["runs", 4],
    "lm 2x16": ["data", 1],  # a language model's batch is not split on a CPU
    "lm 1x6": ["data", 1],
  }
  alone = dataclasses.replace(SEEDS[1], batch_size=6)
  train_and_evaluate(alone, tmp_path / "one", progress=False)
  assert_trees_close(restored_params(root / "auto6"), restored_params(tmp_path / "one"))


def test_map_runs_loops_over_runs_in_passes_with_the_vmaps_values():
  """One run at a time, two at a time (with a remainder) and all at once agree; a
  run computed alone in its pass equals that run computed on its own."""
  from lstmdrop_jax import parallel

  mesh = parallel.make_mesh()
  w = jax.random.normal(jax.random.key(0), (5, 8, 8))
  x = jax.random.normal(jax.random.key(1), (5, 3, 8))
  fn = lambda w, x: (jnp.tanh(x @ w), {"sum": jnp.sum(x @ w)})
  out = {
    at_once: jax.jit(parallel.map_runs(fn, "data", mesh, runs=5, at_once=at_once))(w, x)
    for at_once in (None, 1, 2, 5)
  }
  alone = jax.jit(parallel.map_runs(fn, "data", mesh, runs=1, at_once=1))
  for k in range(5):
    single = alone(w[k : k + 1], x[k : k + 1])
    row = jax.tree.map(lambda a, k=k: a[k : k + 1], out[1])
    jax.tree.map(np.testing.assert_array_equal, row, single)
  for at_once in (2, 5):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), out[at_once], out[1])
  loops = lambda at_once: (
    "scan"
    in str(jax.make_jaxpr(parallel.map_runs(fn, "data", mesh, runs=5, at_once=at_once))(w, x))
  )
  assert loops(None) and loops(1) and loops(2) and not loops(5)  # a CPU's default: one at a time
  for bad in (0, -1, 1.5, True):
    with pytest.raises(ValueError, match="runs_at_once must be an int >= 1"):
      parallel.map_runs(fn, "data", mesh, runs=5, at_once=bad)


_ALLOCATOR_PROBE = """
import json, sys
import jax, numpy as np
from lstmdrop_jax import parallel
from lstmdrop_jax.checkpoint import RunCheckpoints
from lstmdrop_jax.train import Config, train_and_evaluate
from lstmdrop_jax.platform import keep_freed_host_memory
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


_DEFAULT_PROBE = """
import json, os
from lstmdrop_jax import parallel
asked = parallel.setup_cpu_devices()
import jax
out = {"asked": asked, "devices": jax.device_count(), "cores": parallel.usable_cores()}
for late in (None, jax.device_count(), jax.device_count() + 1):
  try:
    out[f"late {late}"] = parallel.setup_cpu_devices(late)
  except ValueError as e:
    out[f"late {late}"] = str(e)
print(json.dumps(out))
"""


def _probe(env_value):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  env.pop("LSTMDROP_CPU_DEVICES")
  if env_value is not None:
    env["LSTMDROP_CPU_DEVICES"] = env_value
  # On every core of the session, not the one core of this test's worker.
  cores = (lambda: os.sched_setaffinity(0, ALL_CORES)) if ALL_CORES else None
  proc = subprocess.run(
    [sys.executable, "-c", _DEFAULT_PROBE],
    capture_output=True, text=True, env=env, cwd=ROOT, preexec_fn=cores,
  )  # fmt: skip
  return proc, (json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None)


def test_entry_points_default_to_a_device_per_core_unless_told_otherwise():
  _, out = _probe(None)
  n = out["cores"]
  assert out["asked"] == n and out["devices"] == n
  # After JAX has started: the default and the same count change nothing, another
  # count is refused.
  assert out["late None"] == n and out[f"late {n}"] == n
  assert "came too late" in out[f"late {n + 1}"]
  _, off = _probe("1")
  assert off["asked"] == 1 and off["devices"] == 1
  proc, _ = _probe("two")
  assert "$LSTMDROP_CPU_DEVICES='two' is not a device count" in proc.stderr


def test_cli_refuses_a_bad_device_count_in_one_line_and_writes_nothing(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", LSTMDROP_CPU_DEVICES="0")
  env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
  cli = [sys.executable, "-m", "lstmdrop_jax.train", "--dataset", "synthetic", "--epochs", "1"]
  workdir = tmp_path / "run"
  proc = subprocess.run([*cli, "--workdir", str(workdir)], capture_output=True, text=True, env=env)
  assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
  assert "error: $LSTMDROP_CPU_DEVICES='0' is not a device count" in proc.stderr
  proc = subprocess.run(
    [*cli, "--workdir", str(workdir), "--cpu-devices", "0"], capture_output=True, text=True, env=env
  )
  assert proc.returncode == 2 and "cpu_devices must be an int >= 1" in proc.stderr
  assert not workdir.exists()


def test_a_bad_heartbeat_timeout_is_one_line_naming_the_variable(monkeypatch):
  from lstmdrop_jax import parallel

  monkeypatch.setenv("LSTMDROP_HEARTBEAT_TIMEOUT", "soon")
  with pytest.raises(ValueError, match=r"LSTMDROP_HEARTBEAT_TIMEOUT='soon' must be a whole"):
    parallel.initialize_distributed("localhost:1", 2, 0)
  monkeypatch.setenv("LSTMDROP_HEARTBEAT_TIMEOUT", "30")
  assert parallel._heartbeat() == {"heartbeat_timeout_seconds": 30}
