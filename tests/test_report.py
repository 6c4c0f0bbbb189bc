"""Reports: tables and plots built from run folders."""

import csv
import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from lstmdrop_jax import report
from lstmdrop_jax.dropout import DropoutConfig


def _fake_run(
  root,
  name,
  dropout,
  seed,
  train_acc,
  val_acc,
  locked=(),
  mc=None,
  data=None,
  trained=10,
  **fields,
):
  folder = root / name / f"seed_{seed}"
  folder.mkdir(parents=True)
  if data is not None:
    (folder / "data.json").write_text(json.dumps(data))
  cfg = {
    "seed": seed,
    "dataset": "GunPoint",
    "epochs": 10,
    **fields,
    "dropout": {
      **dict.fromkeys(("input", "between", "output", "recurrent", "weight", "embedding"), 0.0),
      **dropout,
      "time_locked": list(locked),
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
  summary = {"status": "finished", "epochs": trained, "final": final, "best": final}
  if mc is not None:
    summary["mc"] = {"samples": 10, "val/accuracy": mc, "test/accuracy": mc}
  (folder / "summary.json").write_text(json.dumps(summary))
  recs = [
    {
      "epoch": e,
      "event": "eval",
      "train/accuracy": train_acc * e / 10,
      "val/accuracy": val_acc * e / 10,
      "val/loss": 1.0 / e,
    }
    for e in (5, 10)
  ]
  recs += [{"epoch": e, "train_loss": 1.0 / e} for e in (5, 10)]
  (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_placement_of():
  z = dict.fromkeys(("input", "between", "output", "recurrent", "weight", "embedding"), 0.0)
  assert report.placement_of({"dropout": z}) == ("none", 0.0)
  assert report.placement_of({"dropout": {**z, "between": 0.3}}) == ("between", 0.3)
  assert report.placement_of({"dropout": {**z, "input": 0.2, "between": 0.2, "output": 0.2}}) == (
    "all",
    0.2,
  )
  assert report.placement_of({"dropout": {**z, "input": 0.2, "output": 0.3}}) == (
    "custom: input 0.2, output 0.3",
    0.0,
  )
  assert report.placement_of({"dropout": {**z, "zoneout_h": 0.1}}) == ("zoneout_h", 0.1)
  semeniuta = {**z, "semeniuta": 0.2, "time_locked": ["semeniuta"]}
  assert report.placement_of({"dropout": semeniuta}) == ("semeniuta (locked)", 0.2)
  locked = {**z, "output": 0.3, "time_locked": ["output"]}
  assert report.placement_of({"dropout": locked}) == ("output (locked)", 0.3)
  gated = {**z, "input": 0.5, "output": 0.5, "between": 0.5, "per_gate": True}
  assert report.placement_of({"dropout": gated}) == ("all (per gate)", 0.5)
  partly = {**z, "input": 0.5, "output": 0.5, "between": 0.5, "time_locked": ["output"]}
  assert report.placement_of({"dropout": partly})[0] == (
    "custom: input 0.5, between 0.5, output 0.5; locked output"
  )


def test_tables_are_means_and_t_intervals_over_seeds(tmp_path):
  runs = tmp_path / "runs"
  gaps = {"none_0": [0.3, 0.25, 0.35], "output_0.3": [0.1, 0.05, 0.0]}
  for s in range(3):
    _fake_run(runs, "none_0", {}, s, 1.0, 1.0 - gaps["none_0"][s])
    _fake_run(runs, "output_0.3", {"output": 0.3}, s, 0.95, 0.95 - gaps["output_0.3"][s])
  paths = report.build_report(runs, tmp_path / "out", "title")
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
  for kind in ("curves", "settings"):  # one rate: a dot plot per setting, not a gap-vs-rate line
    assert paths[kind].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert {p.name for p in paths.values()} == {
    "out.md", "out.csv", "out.tex", "out_curves.png", "out_losses.png", "out_settings.png"
  }  # fmt: skip


def test_runs_on_other_data_never_share_a_row(tmp_path, capsys):
  """Own arrays of another shape (another fingerprint), same config and seeds: two rows."""
  runs = tmp_path / "runs"
  for s in range(2):
    for layout, fp in (("ntf", "aaaa1111bbbb2222"), ("nct", "cccc3333dddd4444")):
      _fake_run(runs / layout, "none", {}, s, 1.0, 0.8 if fp[0] == "a" else 0.5,
                data={"dataset": "osu", "fingerprint": fp}, dataset="osu")  # fmt: skip
  paths = report.build_report(runs, tmp_path / "out")
  rows = list(csv.DictReader(paths["csv"].read_text().splitlines()))
  assert sorted((r["data"], r["seeds"], r["val_acc_final_mean"]) for r in rows) == [
    ("aaaa1111", "2", "0.8"),
    ("cccc3333", "2", "0.5"),
  ]
  err = capsys.readouterr().err
  assert "Grouping: a row is one config (seed aside) on one data" in err
  assert "Same config on other data, separate rows: none on data aaaa1111, cccc3333" in err
  assert "Same config on other data" in paths["md"].read_text()
  # Named datasets without a fingerprint: their description tells them apart.
  gun = {"dataset": "GunPoint", "n_train": 35, "normalizer": {"mean": [0.0]}}
  assert report.data_key(gun) == report.data_key({**gun, "normalizer": {"mean": [1.0]}})
  assert report.data_key(gun) != report.data_key({**gun, "n_train": 34})


def test_a_seed_counts_once_in_a_row(tmp_path, capsys):
  """An extended run and a fresh run of the same seed, and another seed: seeds = 2."""
  runs = tmp_path / "runs"
  _fake_run(runs / "extended", "out", {"output": 0.3}, 0, 1.0, 0.9, epochs=40, trained=40)
  _fake_run(runs / "fresh", "out", {"output": 0.3}, 0, 1.0, 0.1, epochs=40, trained=30)
  _fake_run(runs / "fresh", "out", {"output": 0.3}, 1, 1.0, 0.7, epochs=40, trained=40)
  grouping = report.group_runs(report.load_runs(runs))
  (row,) = grouping.rows
  assert row["seeds"] == 2 and row["val_acc_final"]["mean"] == pytest.approx(0.8)
  kept, dropped = grouping.duplicates[0]
  assert kept == runs / "extended" / "out" / "seed_0" and dropped == [runs / "fresh/out/seed_0"]
  report.build_report(runs, tmp_path / "out")
  assert f"kept {kept}, left out {dropped[0]}" in capsys.readouterr().err


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
  paths = report.build_report(tmp_path / "runs", tmp_path / "out")
  rows = {
    (r["placement"], r["rate"]): r for r in csv.DictReader(paths["csv"].read_text().splitlines())
  }
  want = np.mean([s["final"]["train/accuracy"] for s in summaries[2:]])
  np.testing.assert_allclose(float(rows[("output", "0.4")]["train_acc_mean"]), want, atol=1e-6)
  assert rows[("none", "0.0")]["seeds"] == "2"


def test_runs_that_differ_in_anything_but_the_seed_never_share_a_row(tmp_path):
  """Datasets, epochs, time-locking: each its own row, with the varying fields as columns."""
  runs = tmp_path / "runs"
  for s in range(2):
    _fake_run(runs, "a", {"output": 0.3}, s, 1.0, 0.8)
    _fake_run(runs, "b", {"output": 0.3}, s, 1.0, 0.7, epochs=20)
    _fake_run(runs, "c", {"output": 0.3}, s, 1.0, 0.6, dataset="synthetic")
    _fake_run(runs, "d", {"output": 0.3}, s, 1.0, 0.5, locked=["output"])
  paths = report.build_report(runs, tmp_path / "out")
  rows = list(csv.DictReader(paths["csv"].read_text().splitlines()))
  assert len(rows) == 4 and all(r["seeds"] == "2" for r in rows)
  assert {(r["dataset"], r["epochs"], r["placement"]) for r in rows} == {
    ("GunPoint", "10", "output"),
    ("GunPoint", "20", "output"),
    ("synthetic", "10", "output"),
    ("GunPoint", "10", "output (locked)"),
  }
  assert "| dataset | epochs | placement | rate | seeds |" in paths["md"].read_text()


def test_monte_carlo_scores_are_columns_and_every_plot_is_written(tmp_path):
  runs = tmp_path / "runs"
  for s in range(2):
    _fake_run(runs, "none", {}, s, 1.0, 0.8, mc=0.85)
    _fake_run(runs, "out", {"output": 0.5}, s, 0.9, 0.8 + 0.1 * s, mc=0.9)
  paths = report.build_report(runs, tmp_path / "out")
  md = paths["md"].read_text()
  assert "MC val acc" in md and "MC test acc" in md and "0.900 ± 0.000" in md
  for kind in ("curves", "losses", "settings"):
    assert paths[kind].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gap_plot_draws_intervals_only_from_three_seeds(tmp_path, monkeypatch):
  """With 2 seeds a t-interval (t = 12.7) would swamp the plot: dots instead."""
  from lstmdrop_jax import plots

  runs = tmp_path / "runs"
  for s in range(2):
    _fake_run(runs, "out", {"output": 0.5}, s, 0.9, 0.8 + 0.1 * s)
  for s in range(3):
    _fake_run(runs, "inp", {"input": 0.5}, s, 0.9, 0.8 + 0.05 * s)
  drawn = []
  import matplotlib.axes

  vlines = matplotlib.axes.Axes.vlines

  def spy(self, x, lo, hi, **kwargs):
    drawn.append(hi - lo)
    return vlines(self, x, lo, hi, **kwargs)

  monkeypatch.setattr(matplotlib.axes.Axes, "vlines", spy)
  plots.plot_gap(report.report_rows(report.load_runs(runs)), tmp_path / "gap.png")
  assert len(drawn) == 1  # the 3-seed setting only


def test_report_errors_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match="no run folders"):
    report.build_report(tmp_path, tmp_path / "out")
  (tmp_path / "r").mkdir()
  (tmp_path / "r" / "config.json").write_text(json.dumps({"dropout": {}}))
  with pytest.raises(ValueError, match=r"none of the 1 runs .* has finished"):
    report.build_report(tmp_path, tmp_path / "out")


def _title_boxes(fig):
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  return [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]


def test_plots_of_a_sweep_of_thirty_settings_keep_titles_apart(tmp_path, monkeypatch):
  """Long titles wrap and panels wrap into rows: no two titles overlap."""
  import matplotlib.pyplot as plt

  from lstmdrop_jax import plots

  runs = tmp_path / "runs"
  for k in range(30):
    _fake_run(runs, f"p{k}", {"input": 0.1, "output": 0.01 * (k + 1)}, 0, 0.9, 0.8,
              hidden=64, batch_size=16 + k)  # fmt: skip
  rows = report.report_rows(report.load_runs(runs))
  assert not plots.rate_sweep(rows)  # custom settings: a dot plot, not a line over rates
  figures = []
  monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
  plots.plot_curves(rows, tmp_path / "c.png")
  plots.plot_losses(rows, tmp_path / "l.png")
  for fig in figures:
    boxes = _title_boxes(fig)
    assert len(boxes) == 30
    overlaps = [(i, j) for i in range(30) for j in range(i) if boxes[i].overlaps(boxes[j])]
    assert not overlaps, overlaps[:3]
    plt.close(fig)


def test_gap_plot_has_a_panel_and_a_baseline_per_value_of_the_other_fields(tmp_path, monkeypatch):
  from lstmdrop_jax import plots

  runs = tmp_path / "runs"
  for hidden in (32, 64, 128):
    for s in range(2):
      _fake_run(runs / f"h{hidden}", "none", {}, s, 1.0, 0.7, hidden=hidden)
      for rate in (0.2, 0.5):
        _fake_run(runs / f"h{hidden}", f"out{rate}", {"output": rate}, s, 0.9, 0.8, hidden=hidden)
  rows = report.report_rows(report.load_runs(runs))
  assert plots.rate_sweep(rows)
  figures = []
  monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
  plots.plot_gap(rows, tmp_path / "gap.png")
  axes = [ax for ax in figures[0].axes if ax.get_visible() and ax.lines]
  assert len(axes) == 3
  for ax, hidden in zip(axes, (32, 64, 128), strict=True):
    assert f"hidden={hidden}" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["none", "output"]
    assert list(ax.get_xticks()) == [0.2, 0.5]
