"""lstmdrop_jax.results: a study's run folders as per-epoch metrics and summaries."""

import csv
import gzip
import io
import json
import shutil

import pytest

from lstmdrop_jax import results
from lstmdrop_jax.run_folder import read_jsonl, read_summary


def test_every_record_and_summary_is_exported_without_checkpoints(reference_run, tmp_path):
  root = tmp_path / "study"
  shutil.copytree(reference_run, root / "a" / "seed_22")
  (root / "b").mkdir()
  (root / "b" / "config.json").write_text(json.dumps({"seed": 1}))  # started, never trained
  paths = results.export_runs(root, tmp_path / "out")
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
    "epochs.csv.gz", "summaries.jsonl.gz",
  ]  # fmt: skip
  rows = list(csv.DictReader(io.StringIO(gzip.decompress(paths["epochs"].read_bytes()).decode())))
  log = [r for r in read_jsonl(reference_run / "metrics.jsonl") if r.get("event") != "start"]
  assert len(rows) == len(log) and {r["run"] for r in rows} == {"a/seed_22"}
  evals = [r for r in rows if r["event"] == "eval"]
  want = [r for r in log if r.get("event") == "eval"]
  assert [int(r["epoch"]) for r in evals] == [r["epoch"] for r in want]
  assert float(evals[-1]["val/accuracy"]) == pytest.approx(want[-1]["val/accuracy"], rel=1e-5)
  lines = gzip.decompress(paths["summaries"].read_bytes()).decode().splitlines()
  summaries = {s["run"]: s for s in map(json.loads, lines)}
  assert summaries["b"]["status"] == "unfinished" and summaries["b"]["config"] == {"seed": 1}
  assert summaries["a/seed_22"]["best"] == read_summary(reference_run)["best"]
  assert summaries["a/seed_22"]["data"]["dataset"] == "synthetic"
  # The same runs give the same bytes.
  again = results.export_runs(root, tmp_path / "again")
  assert all(again[k].read_bytes() == paths[k].read_bytes() for k in paths)


def test_a_folder_without_runs_is_one_line(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    results.main([str(tmp_path), str(tmp_path / "out")])
  assert e.value.code == 2
  assert (
    capsys.readouterr().err.strip()
    == f"error: {tmp_path}: no run folder (a folder with config.json) below it"
  )
  assert not (tmp_path / "out").exists()
