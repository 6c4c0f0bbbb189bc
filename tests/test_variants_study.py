"""experiments/variants.py: its dataset, settings, combination rule, paired differences
and tables."""

import csv

import numpy as np
import pytest

from lstmdrop_jax import report
from lstmdrop_jax.data import load_dataset
from lstmdrop_jax.sweep import Sweep
from lstmdrop_jax.train import Config
from tests.helpers import load_script
from tests.test_report import _fake_run


def _study():
  return load_script("experiments/variants.py", "variants_study")


def test_synthetic_large_holds_out_300_and_tests_on_1000_clean_series():
  a = load_dataset("synthetic_large", seed=0, val_fraction=0.5)
  b = load_dataset("synthetic_large", seed=1, val_fraction=0.5)
  assert (len(a.train), len(a.val), len(a.test)) == (300, 300, 1000)
  assert a.train.x.shape[1:] == (40, 20) and a.name == "synthetic_large"
  np.testing.assert_array_equal(a.test.x, b.test.x)  # the seed splits, the task is fixed
  assert not np.array_equal(a.train.x, b.train.x)
  small = load_dataset("synthetic", seed=0)
  assert small.train.x.shape[1:] == (100, 20) and len(small.test) == 500


def test_sweeps_take_any_placement_of_a_classifier_as_a_setting():
  base = Config(dataset="synthetic", hidden=4, layers=1, epochs=1)
  points = dict(Sweep(base, ("none", "zoneout_c", "rnndrop"), (0.25,), seeds=1).points())
  assert points["zoneout_c_0.25/seed_0"].dropout.zoneout_c == 0.25
  assert points["rnndrop_0.25/seed_0"].dropout.active() == ("rnndrop",)
  assert points["none_0/seed_0"].dropout.active() == ()
  study = _study()
  quick = study.single_points(study.Args(quick=True).resolved(), "JapaneseVowels")
  assert len(quick) == 2 * (1 + len(study.CLASSIFIER_PLACEMENTS))  # 2 seeds, 1 rate
  assert len(study.single_points(study.Args(), "JapaneseVowels")) == 5 * (1 + 9 * 3)
  assert "embedding" not in _study().CLASSIFIER_PLACEMENTS  # a language model's placement


def _rows(tmp_path, table):
  """Fake run folders: ``{(setting, rate): [(val, test) per seed]}``; the report's rows."""
  for (setting, rate), per_seed in table.items():
    drop = {} if setting == "none" else {setting: rate}
    for seed, (val, test) in enumerate(per_seed):
      _fake_run(tmp_path, f"{setting}_{rate}", drop, seed, 1.0, val)
      summary = tmp_path / f"{setting}_{rate}" / f"seed_{seed}" / "summary.json"
      summary.write_text(
        summary.read_text().replace(f'"test/accuracy": {val}', f'"test/accuracy": {test}')
      )
  return report.report_rows(report.load_runs(tmp_path))


def test_paired_differences_are_taken_seed_by_seed(tmp_path):
  rows = _rows(tmp_path, {
    ("none", 0.0): [(0.80, 0.70), (0.90, 0.90), (0.70, 0.60)],
    ("recurrent", 0.25): [(0.82, 0.75), (0.91, 0.94), (0.72, 0.66)],
  })  # fmt: skip
  none, rec = sorted(rows, key=lambda r: r["setting"])
  d = report.paired_difference(rec, none, "test_acc")
  diffs = [0.05, 0.04, 0.06]
  assert d["mean"] == pytest.approx(0.05) and d["std"] == pytest.approx(np.std(diffs, ddof=1))
  # Paired, the interval is far tighter than the unpaired spread of either row.
  assert 0.0 < d["lo"] < 0.05 < d["hi"] < 0.1
  assert rec["test_acc"]["hi"] - rec["test_acc"]["lo"] > 10 * (d["hi"] - d["lo"])


def test_the_combination_keeps_placements_that_beat_none_on_validation_at_their_best_rate(
  tmp_path,
):
  rows = _rows(tmp_path, {
    ("none", 0.0): [(0.80, 0.0), (0.80, 0.0)],
    ("output", 0.1): [(0.81, 0.0), (0.81, 0.0)],
    ("output", 0.5): [(0.85, 0.0), (0.85, 0.0)],
    ("zoneout_c", 0.25): [(0.83, 0.0), (0.83, 0.0)],
    ("weight", 0.25): [(0.82, 0.0), (0.82, 0.0)],
    ("input", 0.25): [(0.70, 0.99), (0.70, 0.99)],  # test accuracy never selects
  })  # fmt: skip
  best = _study().best_combination
  assert best(rows, 3) == {"output": 0.5, "zoneout_c": 0.25, "weight": 0.25}
  assert best(rows, 2) == {"output": 0.5, "zoneout_c": 0.25}
  worse = [r for r in rows if r["setting"] in ("none", "input")]
  assert best(worse, 3) == {}


def test_the_study_trains_writes_its_tables_and_refuses_unknown_placements(tmp_path, capsys):
  study = _study()
  args = study.Args(datasets=("synthetic_large",), seeds=2, rates=(0.5,), hidden=4, layers=1,
                    epochs=2, eval_every=1, placements=("output", "rnndrop"))  # fmt: skip
  paths = study.run(args, tmp_path)
  with open(paths["csv"]) as f:
    table = {r["setting"]: r for r in csv.DictReader(f)}
  assert set(table) >= {"none", "output 0.5", "rnndrop 0.5"}
  rows = {r["setting"]: r for r in study.study_rows(tmp_path / "synthetic_large" / "runs")}
  want = report.paired_difference(rows["rnndrop"], rows["none"], "test_acc")["mean"]
  assert float(table["rnndrop 0.5"]["delta_test_mean"]) == pytest.approx(want, abs=1e-6)
  assert paths["plot"].stat().st_size > 0 and "Δ test acc vs none" in paths["md"].read_text()
  with pytest.raises(SystemExit, match=r"\['embedding'\] are not placements of a classifier"):
    study.main(["--placements", "embedding", "--out", str(tmp_path / "x")])
