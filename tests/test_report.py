"""Reports: tables and plots built from run folders."""

import csv
import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from lstmdrop_jax import report
from lstmdrop_jax.dropout import DropoutConfig


def _fake_run(root, name, dropout, seed, train_acc, val_acc):
  folder = root / name / f"seed_{seed}"
  folder.mkdir(parents=True)
  cfg = {
    "seed": seed,
    "dropout": {
      **dict.fromkeys(("input", "between", "output", "recurrent", "weight", "embedding"), 0.0),
      **dropout,
      "time_locked": [],
    },
  }
  (folder / "config.json").write_text(json.dumps(cfg))
  final = {
    "epoch": 10,
    "train/accuracy": train_acc,
    "train/loss": 0.1,
    "val/accuracy": val_acc,
    "val/loss": 0.5,
    "test/accuracy": val_acc,
  }
  (folder / "summary.json").write_text(
    json.dumps({"status": "finished", "final": final, "best": final})
  )
  recs = [
    {
      "epoch": e,
      "event": "eval",
      "train/accuracy": train_acc * e / 10,
      "val/accuracy": val_acc * e / 10,
    }
    for e in (5, 10)
  ]
  (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_placement_of():
  z = dict.fromkeys(("input", "between", "output", "recurrent", "weight", "embedding"), 0.0)
  assert report.placement_of({"dropout": z}) == ("none", 0.0)
  assert report.placement_of({"dropout": {**z, "between": 0.3}}) == ("between", 0.3)
  assert report.placement_of({"dropout": {**z, "input": 0.2, "between": 0.2, "output": 0.2}}) == (
    "all",
    0.2,
  )
  assert report.placement_of({"dropout": {**z, "input": 0.2, "output": 0.3}})[0] == "custom"


def test_tables_are_means_and_t_intervals_over_seeds(tmp_path):
  runs = tmp_path / "runs"
  gaps = {"none_0": [0.3, 0.25, 0.35], "output_0.3": [0.1, 0.05, 0.0]}
  for s in range(3):
    _fake_run(runs, "none_0", {}, s, 1.0, 1.0 - gaps["none_0"][s])
    _fake_run(runs, "output_0.3", {"output": 0.3}, s, 0.95, 0.95 - gaps["output_0.3"][s])
  paths = report.build_overfit_report(runs, tmp_path / "out", "title")
  rows = list(csv.DictReader(paths["csv"].read_text().splitlines()))
  assert [(r["placement"], r["rate"]) for r in rows] == [("none", "0.0"), ("output", "0.3")]
  for r, key in zip(rows, gaps, strict=True):
    g = np.array(gaps[key])
    half = stats.t.ppf(0.975, 2) * g.std(ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(float(r["gap_mean"]), g.mean(), atol=1e-6)
    np.testing.assert_allclose(float(r["gap_std"]), g.std(ddof=1), atol=1e-6)
    np.testing.assert_allclose(
      [float(r["gap_ci_lo"]), float(r["gap_ci_hi"])], [g.mean() - half, g.mean() + half], atol=1e-5
    )
  md = paths["md"].read_text()
  assert "| output | 0.3 | 3 |" in md and "0.300 ± 0.050" in md
  assert "\\begin{tabular}" in paths["tex"].read_text()
  for kind in ("curves", "gap"):
    assert paths[kind].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_from_trained_run_folders(tmp_path):
  from lstmdrop_jax.train import Config, train_runs

  base = Config(dataset="synthetic", hidden=6, epochs=2, unroll=1)
  cfgs = [
    dataclasses.replace(base, seed=s, dropout=DropoutConfig(output=r))
    for r in (0.0, 0.4)
    for s in (0, 1)
  ]
  names = [f"{'none_0' if c.dropout.output == 0 else 'output_0.4'}/seed_{c.seed}" for c in cfgs]
  summaries = train_runs(cfgs, [tmp_path / "runs" / n for n in names], progress=False)
  paths = report.build_overfit_report(tmp_path / "runs", tmp_path / "out")
  rows = {
    (r["placement"], r["rate"]): r for r in csv.DictReader(paths["csv"].read_text().splitlines())
  }
  want = np.mean([s["final"]["train/accuracy"] for s in summaries[2:]])
  np.testing.assert_allclose(float(rows[("output", "0.4")]["train_acc_mean"]), want, atol=1e-6)
  assert rows[("none", "0.0")]["seeds"] == "2"


def test_report_errors_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match="no run folders"):
    report.build_overfit_report(tmp_path, tmp_path / "out")
  (tmp_path / "r").mkdir()
  (tmp_path / "r" / "config.json").write_text(json.dumps({"dropout": {}}))
  with pytest.raises(ValueError, match=r"none of the 1 runs .* has finished"):
    report.build_overfit_report(tmp_path, tmp_path / "out")
