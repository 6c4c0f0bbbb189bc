"""scripts/profile_step.py: picks the device's kernel rows out of a trace, and runs."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
  """Imports ``scripts/{name}.py`` as ``python scripts/...`` would, its siblings importable."""
  if name not in sys.modules:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it, so that `import bench_models` finds it
    spec.loader.exec_module(module)
  return sys.modules[name]


_load("bench_models")
profile_step = _load("profile_step")


def _meta(pid, name, tid=None):
  e = {"ph": "M", "pid": pid, "name": "thread_name" if tid else "process_name"}
  return dict(e, tid=tid, args={"name": name}) if tid else dict(e, args={"name": name})


def _span(pid, tid, name, dur):
  return {"ph": "X", "pid": pid, "tid": tid, "name": name, "ts": 0, "dur": dur}


def test_gpu_trace_keeps_the_streams_and_drops_summary_rows():
  trace = {
    "traceEvents": [
      _meta(1, "/host:CPU"),
      _meta(2, "/device:GPU:0"),
      _meta(2, "Stream #7(Compute)", tid=7),
      _meta(2, "XLA Ops", tid=8),
      _span(1, 1, "PjitFunction(run)", 100),
      _span(2, 7, "gemm_fusion_dot", 5),
      _span(2, 7, "loop_add_fusion", 2),
      _span(2, 8, "fusion.3", 7),  # the op-level summary of the same kernels
    ]
  }
  where, events = profile_step.kernel_events(trace)
  assert where == "/device:GPU:0"
  assert sorted(e["name"] for e in events) == ["gemm_fusion_dot", "loop_add_fusion"]


def test_gpu_trace_without_stream_rows_is_refused_not_misread():
  trace = {
    "traceEvents": [
      _meta(2, "/device:GPU:0"),
      _meta(2, "XLA Ops", tid=8),
      _span(2, 8, "fusion.3", 7),
    ]
  }
  with pytest.raises(ValueError, match="no stream rows in the trace of /device:GPU:0"):
    profile_step.kernel_events(trace)


def test_cpu_trace_keeps_the_thunks_not_their_wrappers():
  trace = {
    "traceEvents": [
      _meta(1, "/host:CPU"),
      _span(1, 1, "ThunkExecutor::Execute", 50),
      _span(1, 1, "PjitFunction(run)", 60),
      _span(1, 2, "ynn_fusion.2", 20),
      _span(1, 2, "while.3", 30),
      _span(1, 3, "multiply_tanh_fusion", 4),
    ]
  }
  where, events = profile_step.kernel_events(trace)
  assert where == "host"
  assert sorted(e["name"] for e in events) == ["multiply_tanh_fusion", "ynn_fusion.2"]


def test_profiles_a_step_on_this_machine(tmp_path):
  out = tmp_path / "prof.json"
  args = ["--configs", "seed_clf", "--steps", "1", "--top", "3", "--json", str(out)]
  proc = subprocess.run(
    [sys.executable, str(SCRIPTS / "profile_step.py"), *args],
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  (r,) = json.loads(out.read_text())
  assert r["config"] == "seed_clf" and r["wall_ms"] > 0
  assert len(r["top"]) == 3 and r["launches"] >= 3
  assert r["top"][0]["ms"] >= r["top"][-1]["ms"] > 0
