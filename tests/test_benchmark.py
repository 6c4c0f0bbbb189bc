"""experiments/benchmark.py: its data handling, rate choice, ranks, outputs and flags."""

import csv
import json

import numpy as np
import pytest

from tests.helpers import load_script


@pytest.fixture(scope="module")
def bench():
  return load_script("experiments/benchmark.py", "benchmark_study")


def test_window_mean_averages_valid_steps_only(bench):
  x = np.arange(1, 8, dtype=np.float32)[None, :, None].repeat(2, axis=0)  # [2, 7, 1]
  x[1, 5:] = 0.0  # the second series has 5 valid steps
  s = bench.Series(x, np.array(["a", "b"]), np.array([7, 5], np.int32))
  w = bench.window_mean(s, 3)
  np.testing.assert_allclose(w.x[0, :, 0], [2.0, 5.0, 7.0])  # (1+2+3)/3, (4+5+6)/3, 7/1
  np.testing.assert_allclose(w.x[1, :, 0], [2.0, 4.5, 0.0])  # (4+5)/2; nothing valid after
  assert list(w.lengths) == [3, 2]
  assert bench.window_mean(s, 1) is s


def test_resample_zero_is_the_official_split_and_others_keep_sizes_and_classes(bench):
  official = bench.load_official("ItalyPowerDemand", window=1)
  tr0, te0 = bench.resample(official, 0)
  assert tr0 is official.train and te0 is official.test
  tr1, te1 = bench.resample(official, 1)
  tr2, _ = bench.resample(official, 2)
  assert (len(tr1.x), len(te1.x)) == (len(tr0.x), len(te0.x))
  for new, old in ((tr1, tr0), (te1, te0)):
    assert sorted(np.unique(new.y, return_counts=True)[1]) == sorted(
      np.unique(old.y, return_counts=True)[1]
    )
  # Train and test are disjoint and together are the union of the official splits.
  union = np.concatenate([tr0.x, te0.x]).reshape(len(tr0.x) + len(te0.x), -1)
  drawn = np.concatenate([tr1.x, te1.x]).reshape(len(union), -1)
  assert sorted(map(bytes, union)) == sorted(map(bytes, drawn))
  assert not np.array_equal(tr1.x, tr0.x) and not np.array_equal(tr1.x, tr2.x)


def test_rate_choice_and_ranks(bench):
  assert bench.choose_rate({0.1: [0.8, 0.6], 0.3: [0.9, 0.7]}) == 0.3
  assert bench.choose_rate({0.3: [0.7, 0.7], 0.1: [0.6, 0.8]}) == 0.1  # a tie: the lower
  ranks = bench.ranks_of(np.array([[0.9, 0.8, 0.8], [0.1 + 0.2, 0.3, 0.5]]))
  np.testing.assert_array_equal(ranks, [[1, 2.5, 2.5], [2.5, 2.5, 1]])  # 0.1+0.2 ties 0.3


@pytest.mark.parametrize(
  "flag, words",
  [
    (["--datasets", "Coffee"], "--datasets: unknown dataset(s) ['Coffee']"),
    (["--rates", "1.5"], "--rates: [1.5] outside (0, 1)"),
    (["--settings", "none", "input"], "--settings: name at least two settings"),
    (["--resamples", "0"], "--resamples must be an integer >= 1"),
  ],
)
def test_a_bad_flag_is_one_line_and_trains_nothing(bench, tmp_path, capsys, flag, words):
  with pytest.raises(SystemExit) as e:
    bench.main([*flag, "--out", str(tmp_path / "out")])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith(f"error: {words}") and "\n" not in err
  assert not (tmp_path / "out").exists()


def _rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_a_small_benchmark_writes_every_table_and_the_diagram_and_resumes(
  bench, tmp_path, monkeypatch
):
  kw = dict(
    datasets=("ItalyPowerDemand", "BasicMotions", "synthetic"),
    settings=("none", "input", "recurrent"),
    rates=(0.2, 0.4),
    resamples=2,
    epochs=1,
    hidden=8,
    layers=1,
    progress=False,
  )
  out = tmp_path / "b"
  # The checkout changes while the runs train: the record names the commit they started from.
  moved = lambda: "def5678+changes" if out.exists() else "abc1234"
  monkeypatch.setattr(bench.provenance, "commit", moved)
  summary = bench.run_benchmark(out, **kw)
  monkeypatch.undo()
  assert summary["commit"] == "abc1234"
  labels = ["none", "input", "recurrent"]

  acc = _rows(out / "benchmark_accuracy.csv")
  assert [r["dataset"] for r in acc] == list(kw["datasets"])
  assert acc[1]["steps_original"] == "100" and acc[0]["steps_used"] == "24"
  rates = _rows(out / "benchmark_rates.csv")
  assert len(rates) == 3 * (1 + 2 * 2)  # none once, two settings at two rates, per dataset
  for d in kw["datasets"]:
    for s in labels[1:]:
      mine = [r for r in rates if r["dataset"] == d and r["setting"] == s]
      chosen = [r for r in mine if r["chosen"] == "1"]
      assert len(chosen) == 1  # the chosen rate has the best mean validation accuracy
      assert float(chosen[0]["val_acc_best_mean"]) == max(
        float(r["val_acc_best_mean"]) for r in mine
      )
      assert float(acc[kw["datasets"].index(d)][f"{s}_rate"]) == float(chosen[0]["rate"])

  # Mean ranks from the accuracy table's means (1 = best, ties averaged).
  means = np.array([[float(r[f"{s}_test_mean"]) for s in labels] for r in acc])
  expected = bench.ranks_of(means).mean(axis=0)
  ranks = {r["setting"]: float(r["mean rank"]) for r in _rows(out / "benchmark_ranks.csv")}
  np.testing.assert_allclose([ranks[s] for s in labels], expected, atol=1e-5)
  assert set(summary["mean_ranks"]) == set(labels)

  p = _rows(out / "benchmark_pvalues.csv")
  assert [r["setting"] for r in p] == labels
  assert all(float(r[s]) == 1.0 for r, s in zip(p, labels, strict=True))  # the diagonal
  assert 0.0 <= summary["friedman_p"] <= 1.0
  vs_none = _rows(out / "benchmark_vs_none.csv")
  assert len(vs_none) == 3 * 2 and all(r["n"] == "2" for r in vs_none)
  assert (out / "benchmark_cd.png").stat().st_size > 10_000
  for name in ("accuracy", "rates", "ranks", "pvalues", "vs_none"):
    assert (out / f"benchmark_{name}.md").read_text().startswith("1x8 LSTM, 2 resamples")

  saved = json.loads((out / "benchmark.json").read_text())
  assert saved["resamples"] == 2 and saved["rates"] == [0.2, 0.4]
  assert set(saved["datasets"]) == set(kw["datasets"])
  assert saved["datasets"]["synthetic"]["resample_rule"].startswith("seed r only")
  # Every run has its folder, and a second call trains nothing and writes the same tables.
  assert (out / "BasicMotions" / "r1" / "recurrent_0.4" / "metrics.jsonl").is_file()
  before = (out / "benchmark_accuracy.csv").read_text()
  bench.run_benchmark(out, **kw)
  assert (out / "benchmark_accuracy.csv").read_text() == before
