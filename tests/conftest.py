"""Helpers shared by the test files, and one compilation cache for the whole test session."""

import os
import shutil
import tempfile

# Before JAX is imported anywhere: every program is compiled once per test
# session, in this process, in pytest-xdist's workers and in the subprocesses the
# tests start (they all inherit the environment). The cache is new for each session.
_WORKER = "PYTEST_XDIST_WORKER" in os.environ
if _WORKER and os.environ.get("JAX_COMPILATION_CACHE_DIR"):
  _CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"]  # the controller's
else:
  _CACHE = tempfile.mkdtemp(prefix="lstmdrop_jax_tests_")
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
# One CPU device, in this process and in the command lines the tests start (whose
# default is one per core); the tests of that default set their own.
os.environ["LSTMDROP_CPU_DEVICES"] = "1"
#: The cores this session may use. Each pytest-xdist worker, and every process it
#: starts, runs on one of them: the workers are the parallelism, and XLA's own
#: threads would only contend with the other workers' (a fifth more CPU time).
ALL_CORES = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else None
if _WORKER and ALL_CORES:
  _n = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw"))
  os.sched_setaffinity(0, {sorted(ALL_CORES)[_n % len(ALL_CORES)]})

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from lstmdrop_jax.checkpoint import RunCheckpoints
from lstmdrop_jax.dropout import DropoutConfig
from lstmdrop_jax.run_folder import read_jsonl
from lstmdrop_jax.train import Config, train_and_evaluate

#: A small run with every kind of write: 4 epochs, a checkpoint every 2, better
#: validation scores at epochs 1, 3 and 4 (epoch 1's state is held and written
#: as the best with epoch 2's checkpoint; epoch 4's supersedes epoch 3's), the
#: last 2 kept.
SMALL_RUN = Config(
  dataset="synthetic",
  hidden=8,
  layers=2,
  dropout=DropoutConfig(input=0.1, between=0.2, output=0.3),
  epochs=4,
  batch_size=16,
  checkpoint_every=2,
  keep_checkpoints=2,
  learning_rate=3e-3,
  unroll=1,
  seed=22,  # the seed whose validation scores improve at epochs 1, 3 and 4
)


def _torch_layout_weights(seed=0, layers=2, F=5, H=7):
  """Random weights in PyTorch nn.LSTM layout, U(-1/sqrt(H), 1/sqrt(H))."""
  rng = np.random.default_rng(seed)
  k = 1 / np.sqrt(H)
  sd = {}
  for layer in range(layers):
    fin = F if layer == 0 else H
    sd[f"weight_ih_l{layer}"] = rng.uniform(-k, k, (4 * H, fin)).astype(np.float32)
    sd[f"weight_hh_l{layer}"] = rng.uniform(-k, k, (4 * H, H)).astype(np.float32)
    sd[f"bias_ih_l{layer}"] = rng.uniform(-k, k, (4 * H,)).astype(np.float32)
    sd[f"bias_hh_l{layer}"] = rng.uniform(-k, k, (4 * H,)).astype(np.float32)
  return sd


@pytest.fixture
def torch_weights():
  """``torch_weights(seed=0, layers=2, F=5, H=7)``: a random ``nn.LSTM`` state dict (numpy)."""
  return _torch_layout_weights


def folder_state(workdir: Path) -> dict:
  """Everything a run folder holds, but wall-clock times."""
  out = {"files": sorted(p.name for p in workdir.iterdir())}
  out["log"] = [
    {k: v for k, v in r.items() if k != "time"} for r in read_jsonl(workdir / "metrics.jsonl")
  ]
  summary = json.loads((workdir / "summary.json").read_text())
  summary.pop("wall_time_s")
  summary.pop("train_time_s")
  out["summary"] = summary
  ckpt = RunCheckpoints(workdir)
  try:
    for which in ("last", "best"):
      steps = sorted(int(p.name) for p in (workdir / "checkpoints" / which).iterdir())
      out[which] = steps  # a leftover temporary folder would fail int()
      for epoch in steps:
        state, meta = ckpt.restore(which=which, epoch=epoch)
        meta.pop("elapsed")
        meta.pop("wall")
        out[f"{which}/{epoch}"] = (jax.tree.map(np.asarray, state), meta)
  finally:
    ckpt.close()
  return out


def _assert_same_folder(got: Path, want: Path, *, but: tuple[str, str] | None = None) -> None:
  """Two run folders hold the same files, log, summary and checkpoints (wall times aside).

  ``but``: ``(checkpoint, field)``, e.g. ``("last/2", "dropout")``, a state field not compared.
  """
  a, b = folder_state(got), folder_state(want)
  assert a.keys() == b.keys()
  for k in a:
    if "/" in k:  # a checkpoint: (state, meta)
      skip = lambda state, k=k: dict(state, **{but[1]: None}) if but and but[0] == k else state
      jax.tree.map(np.testing.assert_array_equal, skip(a[k][0]), skip(b[k][0]))
      assert a[k][1] == b[k][1], k
    else:
      assert a[k] == b[k], k


@pytest.fixture
def same_folder():
  """``same_folder(got, want)``: asserts two run folders are the same (wall times aside)."""
  return _assert_same_folder


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
  """``SMALL_RUN`` trained without interruption: the folder the fault tests must end at."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  train_and_evaluate(SMALL_RUN, workdir, progress=False)
  return workdir


def pytest_sessionfinish(session, exitstatus):
  if not _WORKER:  # the controller's session ends after its workers'
    shutil.rmtree(_CACHE, ignore_errors=True)


#: The test files that take longest, slowest first. pytest-xdist hands whole files to
#: its workers (``--dist loadfile``) in collection order (``--no-loadscope-reorder``
#: keeps this one rather than ordering files by their number of tests), so the long
#: files start first and the short ones fill in: the workers finish together.
SLOWEST_FIRST = (
  "test_train.py",
  "test_parallel.py",
  "test_workflow.py",
  "test_variants.py",
  "test_groups.py",
  "test_multiprocess.py",
  "test_benchmark.py",
  "test_steps.py",
  "test_fused.py",
  "test_models.py",
)


def pytest_collection_modifyitems(items):
  first = {name: k for k, name in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: first.get(item.path.name, len(first)))  # stable: a file's order
