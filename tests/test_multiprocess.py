"""The multi-host path, for real: two processes on this machine, one coordinator on localhost.

Each process is the command line (``python -m lstmdrop_jax.train
--coordinator ... --num-processes 2 --process-id i``) on one CPU device, so
the two processes train one run data parallel over two devices, with
cross-process collectives (Gloo). Checked: the run equals the one-process
run, only process 0 writes the run folder's files, the checkpoint resumes
in one process, and a killed process makes the other exit with a clear
error instead of hanging.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lstmdrop_jax.run_folder import read_jsonl
from lstmdrop_jax.train import train_and_evaluate
from tests.conftest import SMALL_RUN
from tests.helpers import ROOT, assert_trees_close, restored_params

# Records every file this process opens for writing, outside checkpoints/,
# then runs the command line.
_WORKER = """
import builtins, io, json, os, sys
workdir, argv = os.path.abspath(sys.argv[1]), sys.argv[2:]
written = set()

def note(path):
  path = os.path.abspath(os.fspath(path))
  if path.startswith(workdir) and os.sep + "checkpoints" not in path[len(workdir):]:
    written.add(path)

def spy(real):
  def opener(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
      note(file)
    return real(file, mode, *args, **kwargs)
  return opener

builtins.open, io.open = spy(builtins.open), spy(io.open)
real_os_open, real_replace = os.open, os.replace

def os_open(path, flags, *args, **kwargs):
  if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
    note(path)
  return real_os_open(path, flags, *args, **kwargs)

def replace(src, dst, *args, **kwargs):
  note(dst)
  return real_replace(src, dst, *args, **kwargs)

os.open, os.replace = os_open, replace
from lstmdrop_jax.cli import main
try:
  main(argv)
finally:
  print("WRITES " + json.dumps(sorted(written)), flush=True)
"""


def _flags(config) -> list[str]:
  c = config
  return [
    "--dataset", c.dataset, "--seed", str(c.seed), "--hidden", str(c.hidden),
    "--layers", str(c.layers),
    "--epochs", str(c.epochs), "--batch-size", str(c.batch_size),
    "--checkpoint-every", str(c.checkpoint_every), "--learning-rate", str(c.learning_rate),
    "--unroll", "1", "--dropout.input", "0.1", "--dropout.between", "0.2",
    "--dropout.output", "0.3",
  ]  # fmt: skip


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(workdir: Path, config, port: int) -> list[subprocess.Popen]:
  # A lost process is noticed by a failed collective or, at the latest, by the
  # coordination service's heartbeat: 20 s here instead of JAX's 100.
  env = dict(os.environ, JAX_PLATFORMS="cpu", LSTMDROP_HEARTBEAT_TIMEOUT="20")
  env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
  env.pop("XLA_FLAGS", None)
  procs = []
  for i in range(2):
    argv = ["--workdir", str(workdir), *_flags(config), "--cpu-devices", "1"]
    argv += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)]
    procs.append(
      subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_WORKER), str(workdir), *argv],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
      )
    )  # fmt: skip
  return procs


def _finish(procs, timeout=240) -> list[tuple[int, str, str]]:
  out = []
  deadline = time.time() + timeout
  for p in procs:
    try:
      stdout, stderr = p.communicate(timeout=max(deadline - time.time(), 1))
    except subprocess.TimeoutExpired:
      for q in procs:
        os.killpg(q.pid, signal.SIGKILL)
      raise AssertionError("a process of the two hung") from None
    out.append((p.returncode, stdout, stderr))
  return out


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("two") / "run"
  results = _finish(_start(workdir, SMALL_RUN, _free_port()))
  for code, _, stderr in results:
    assert code == 0, stderr[-3000:]
  writes = [json.loads(next(ln for ln in out.splitlines() if ln.startswith("WRITES "))[7:])
            for _, out, _ in results]  # fmt: skip
  return workdir, writes


def test_two_processes_train_the_one_process_run(two_processes, reference_run):
  workdir, _ = two_processes
  assert_trees_close(restored_params(workdir), restored_params(reference_run))
  ev = lambda d: [r for r in read_jsonl(d / "metrics.jsonl") if r.get("event") == "eval"]
  assert len(ev(workdir)) == SMALL_RUN.epochs
  for a, b in zip(ev(workdir), ev(reference_run), strict=True):
    np.testing.assert_allclose(a["val/loss"], b["val/loss"], rtol=1e-5)


def test_only_process_0_writes_the_run_folder(two_processes):
  workdir, (writes0, writes1) = two_processes
  assert writes1 == [], writes1
  assert {Path(p).name for p in writes0} >= {"config.json", "metrics.jsonl", "summary.json"}
  records = read_jsonl(workdir / "metrics.jsonl")
  assert len(records) == len({json.dumps(r, sort_keys=True) for r in records})  # written once


def test_a_two_process_checkpoint_resumes_in_one_process(two_processes, tmp_path):
  workdir, _ = two_processes
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  # As if both processes had been killed right after the epoch-2 checkpoint.
  for sub in ("last", "best"):
    for p in (run / "checkpoints" / sub).iterdir():
      if int(p.name) > 2:
        shutil.rmtree(p)
  (run / "summary.json").unlink()
  summary = train_and_evaluate(SMALL_RUN, run, progress=False)
  assert summary["epochs"] == SMALL_RUN.epochs
  assert_trees_close(restored_params(run), restored_params(workdir))


@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_process_makes_the_other_exit_with_a_clear_error(tmp_path, victim):
  import dataclasses

  workdir = tmp_path / "run"
  procs = _start(workdir, dataclasses.replace(SMALL_RUN, epochs=200), _free_port())
  deadline = time.time() + 180
  while time.time() < deadline and not any(
    r.get("epoch", 0) >= 2 for r in read_jsonl(workdir / "metrics.jsonl")
  ):
    if any(p.poll() is not None for p in procs):
      break
    time.sleep(0.05)
  assert all(p.poll() is None for p in procs), "a process ended before the kill"
  os.killpg(procs[victim].pid, signal.SIGKILL)
  # The survivor must exit within 120 s (_finish fails the test if it hangs), with an error.
  ((code, _, stderr),) = _finish([procs[1 - victim]], timeout=120)
  procs[victim].wait()
  assert code != 0
  if victim == 1:  # the survivor is the coordinator: our one line, exit status 3
    assert code == 3, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: process 0 of 2 lost the other processes"), last
    assert "Re-run the same command on every host to resume" in last
  else:
    # The coordinator is gone. Whichever notices first ends the survivor: its failed
    # all-reduce (our one line, exit status 3) or JAX's coordination client.
    lost = "error: process 1 of 2 lost the other processes" in stderr and code == 3
    jax_ended = "coordination service" in stderr or "another task died" in stderr
    assert lost or jax_ended, stderr[-3000:]
