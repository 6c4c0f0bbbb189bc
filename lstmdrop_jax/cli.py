"""The command line of the training loop: ``python -m lstmdrop_jax.train``.

Every ``Config`` field is a flag (see ``--help``)::

  python -m lstmdrop_jax.train --workdir runs/gunpoint --dataset GunPoint \\
      --dropout.output 0.3 --epochs 200

Re-running the same command resumes the run bit for bit from its last
checkpoint; the same folder with another config is refused. A mistake the
user can fix (a bad flag value, a damaged or unwritable run folder, a
diverged run) is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import jax
import tyro

from lstmdrop_jax import parallel as par
from lstmdrop_jax.config import Config
from lstmdrop_jax.platform import keep_freed_host_memory
from lstmdrop_jax.run_folder import RunFolderError
from lstmdrop_jax.train import train_and_evaluate

#: What a user can fix: reported as one line, exit status 2.
_USER_ERRORS = (ValueError, FloatingPointError, RunFolderError, OSError)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Command-line entry point: ``python -m lstmdrop_jax.train --workdir DIR [flags]``."""
  try:
    argv = list(sys.argv[1:] if argv is None else argv)
    default = _Cli(workdir=tyro.MISSING, config=_config_file(argv))
    args = tyro.cli(_Cli, args=argv, prog=PROG, description=DESCRIPTION, default=default)
    par.setup_cpu_devices(args.cpu_devices)
    keep_freed_host_memory()
    par.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    summary = train_and_evaluate(args.config, args.workdir)
  except Exception as e:
    if _lost_peers(e):
      _exit(
        f"error: process {jax.process_index()} of {jax.process_count()} lost the other "
        f"processes ({_one_line(_root(e))[:300]}); the run folder keeps its last checkpoint. "
        "Re-run the same command on every host to resume",
        3,
      )
    if not isinstance(e, _USER_ERRORS):
      raise
    _exit(f"error: {_one_line(e)}", 2)
  shown = ("status", "epochs", "wall_time_s", "train_time_s", "final", "best", "mc")
  printed = {"workdir": str(args.workdir), **{k: summary[k] for k in shown if k in summary}}
  print(json.dumps(printed, indent=2))
  return summary


PROG = "python -m lstmdrop_jax.train"
DESCRIPTION = (
  "Train one LSTM run with dropout, or resume it: re-running the same command in the same "
  "--workdir continues from its last checkpoint."
)


#: Words of the errors a collective or the coordination service raises when a peer is gone.
_PEER_GONE = ("Gloo", "Connection reset", "Connection closed", "coordination service", "heartbeat")


def _root(e: BaseException) -> BaseException:
  while e.__cause__ is not None:
    e = e.__cause__
  return e


def _lost_peers(e: BaseException) -> bool:
  """Whether ``e`` is a multi-process run losing its other processes."""
  if not jax.distributed.is_initialized() or jax.process_count() < 2:
    return False
  return any(word in str(x) for x in (e, _root(e)) for word in _PEER_GONE)


def _config_file(argv: Sequence[str]) -> Config:
  """The config of ``--config FILE`` in ``argv`` (the defaults without it); flags override it."""
  path = None
  for i, arg in enumerate(argv):
    if arg == "--config" and i + 1 < len(argv):
      path = argv[i + 1]
    elif arg.startswith("--config="):
      path = arg.split("=", 1)[1]
  if path is None:
    return Config()
  try:
    d = json.loads(Path(path).read_text())
  except OSError as e:
    raise ValueError(f"--config {path}: cannot read it ({e.strerror})") from None
  except UnicodeDecodeError:
    raise ValueError(
      f"--config {path}: not a text file; expected a JSON object of config fields (a run "
      "folder's config.json)"
    ) from None
  except json.JSONDecodeError as e:
    raise ValueError(f"--config {path}: not valid JSON ({e.msg} at line {e.lineno})") from None
  if not isinstance(d, dict):
    raise ValueError(f"--config {path}: expected a JSON object of config fields")
  try:
    return Config.from_dict(d)
  except (TypeError, ValueError) as e:
    raise ValueError(f"--config {path}: {e}") from None


def _one_line(e: BaseException) -> str:
  return " ".join(str(e).split()) or type(e).__name__


def _exit(message: str, code: int) -> None:
  print(message, file=sys.stderr, flush=True)
  if jax.distributed.is_initialized():
    # The other processes cannot finish a clean shutdown with this one: leave
    # without JAX's exit barrier, which would wait for them in vain.
    sys.stdout.flush()
    os._exit(code)
  raise SystemExit(code)


@dataclasses.dataclass(frozen=True)
class _Cli:
  workdir: Path
  """Run folder: created if absent, resumed if it holds this config."""
  config: Annotated[Config, tyro.conf.arg(name="")] = Config()
  config_file: Annotated[Path | None, tyro.conf.arg(name="config")] = None
  """A JSON file of config fields to start from (a run folder's config.json re-runs
  that run); the other flags override it."""
  coordinator: str | None = None
  """Multi-host: host:port of process 0 (with --num-processes and --process-id).
  Inside a SLURM allocation of several tasks these are read from SLURM."""
  num_processes: int | None = None
  """Multi-host: number of processes."""
  process_id: int | None = None
  """Multi-host: this process's index."""
  cpu_devices: int | None = None
  """CPU: present the CPU as this many JAX devices and split each batch over as many
  of them as divide it (default: one per usable core, or $LSTMDROP_CPU_DEVICES;
  1 switches it off)."""
