"""A study's run folders as two small files for the repository: every run's per-epoch
metrics and every run's summary, without checkpoints.

``python -m lstmdrop_jax.results RUNS OUT`` writes

* ``OUT/epochs.csv.gz``: one row per log record (training epochs and evaluations) of
  every run folder under ``RUNS``: ``run`` (the folder, relative to ``RUNS``), ``epoch``,
  ``event`` (``train`` or ``eval``), then every numeric field of the records; floats to
  six significant digits;
* ``OUT/summaries.jsonl.gz``: one line per run, ``{"run": ..., "config": ..., **summary}``.

Both are gzipped with a fixed timestamp, so the same runs give the same bytes.
``commit()`` and ``machine()`` say where a study's numbers came from.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lstmdrop_jax import run_folder as rf

#: Start records describe the data (written to the summaries' ``data`` instead).
_SKIPPED_EVENTS = ("start",)


def run_folders(root: Path) -> list[Path]:
  """Every run folder (a folder with ``config.json``) under ``root``, sorted."""
  return sorted(p.parent for p in root.rglob("config.json"))


def _number(v: Any) -> Any:
  return float(f"{v:.6g}") if isinstance(v, float) else v


def export_runs(root: str | Path, out: str | Path) -> dict[str, Path]:
  """Writes ``epochs.csv.gz`` and ``summaries.jsonl.gz`` of the runs under ``root`` to
  ``out``; returns their paths. Raises ``ValueError`` when ``root`` holds no run."""
  root, out = Path(root), Path(out)
  folders = run_folders(root)
  if not folders:
    raise ValueError(f"{root}: no run folder (a folder with config.json) below it")
  rows, summaries, fields = [], [], set()
  for folder in folders:
    name = folder.relative_to(root).as_posix()
    start = None
    for record in rf.read_jsonl(folder / "metrics.jsonl"):
      event = record.get("event", "train")
      if event in _SKIPPED_EVENTS:
        start = record
        continue
      numbers = {k: _number(v) for k, v in record.items() if isinstance(v, int | float)}
      fields.update(numbers)
      rows.append({"run": name, "event": event, **numbers})
    summary = rf.read_summary(folder) or {"status": "unfinished"}
    summaries.append({"run": name, "config": rf.read_config(folder), "data": start, **summary})
  out.mkdir(parents=True, exist_ok=True)
  header = ["run", "epoch", "event", *sorted(fields - {"epoch"})]
  text = io.StringIO()
  writer = csv.DictWriter(text, header, lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  paths = {"epochs": out / "epochs.csv.gz", "summaries": out / "summaries.jsonl.gz"}
  lines = "".join(json.dumps(s, sort_keys=True) + "\n" for s in summaries)
  for path, body in ((paths["epochs"], text.getvalue()), (paths["summaries"], lines)):
    path.write_bytes(gzip.compress(body.encode(), mtime=0))
  return paths


#: The checkout this package sits in (when it is one).
_CHECKOUT = Path(__file__).resolve().parents[1]


def commit(root: str | Path = _CHECKOUT) -> str | None:
  """The checkout's short commit hash, with ``+changes`` when tracked files differ from
  it; None outside a git checkout."""
  git = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, timeout=10)
  try:
    head, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "-uno")
  except (OSError, subprocess.SubprocessError):
    return None
  if head.returncode:
    return None
  return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def machine() -> dict[str, Any]:
  """The machine and software a study ran on: platform, processor, cores, Python, JAX and
  its devices."""
  import jax

  cpu = platform.processor() or platform.machine()
  try:
    names = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
    cpu = names[0].split(":", 1)[1].strip() if names else cpu
  except OSError:
    pass
  return {
    "platform": platform.platform(),
    "processor": cpu,
    "python": platform.python_version(),
    "cpu_count": os.cpu_count(),
    "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    "jax": jax.__version__,
    "devices": [str(d) for d in jax.devices()],
  }


def main(argv: Sequence[str] | None = None) -> None:
  args = list(sys.argv[1:] if argv is None else argv)
  if len(args) != 2 or args[0] in ("-h", "--help"):
    print("usage: python -m lstmdrop_jax.results RUNS OUT\n\n" + __doc__.split("\n\n")[0])
    raise SystemExit(0 if args[:1] in (["-h"], ["--help"]) else 2)
  try:
    paths = export_runs(*args)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  for path in paths.values():
    print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
  main()
