"""Sweeps: the grid, its stackable groups, one run folder per point, the tables."""

import csv
import dataclasses

import pytest

from lstmdrop_jax import sweep as sweep_lib
from lstmdrop_jax.sweep import Sweep, groups, parse_vary
from lstmdrop_jax.train import Config

BASE = Config(dataset="synthetic", hidden=4, layers=1, epochs=2, unroll=1, eval_every=1)


def test_the_grid_names_every_point_and_groups_what_can_be_stacked():
  s = Sweep(BASE, settings=("none", "output", "all"), rates=(0.2, 0.5), seeds=2,
            vary={"hidden": (4, 6), "dropout.recurrent": (0.0, 0.1)})  # fmt: skip
  points = s.points()
  assert len(points) == 2 * 2 * (1 + 2 + 2) * 2
  names = [n for n, _ in points]
  assert len(set(names)) == len(names)
  assert "hidden=6/dropout.recurrent=0.1/all_0.5/seed_1" in names
  cfg = dict(points)["hidden=6/dropout.recurrent=0.1/all_0.5/seed_1"]
  assert (cfg.hidden, cfg.seed, cfg.dropout.recurrent) == (6, 1, 0.1)
  assert (cfg.dropout.input, cfg.dropout.between, cfg.dropout.output) == (0.5, 0.5, 0.5)
  # Seeds and dropout rates stack; each hidden size is its own group.
  chunks = groups(points)
  assert len(chunks) == 2 and [len(c) for c in chunks] == [20, 20]
  assert {c[1].hidden for c in chunks[0]} == {4}
  assert [len(c) for c in groups(points, size=8)] == [8, 8, 4, 8, 8, 4]


@pytest.mark.parametrize(
  ("sweep", "message"),
  [
    (Sweep(BASE, settings=("sideways",)), "unknown settings"),
    (Sweep(BASE, settings=("output",)), "need --rates"),
    (Sweep(BASE, vary={"colour": ("red",)}), r"unknown config fields \['colour'\]"),
    (Sweep(BASE, vary={"seed": (1, 2)}), "vary seeds with --seeds"),
  ],
)
def test_bad_grids_are_refused(sweep, message):
  with pytest.raises(ValueError, match=message):
    sweep.points()


def test_parse_vary_reads_json_values():
  assert parse_vary(["hidden=32,64", "optimizer=sgd,adam", "clip_norm=null,1.5"]) == {
    "hidden": (32, 64),
    "optimizer": ("sgd", "adam"),
    "clip_norm": (None, 1.5),
  }
  with pytest.raises(ValueError, match="expected FIELD=V1,V2"):
    parse_vary(["hidden"])


def test_a_sweep_trains_its_groups_and_writes_one_row_per_point(tmp_path, monkeypatch):
  calls = []
  train_runs = sweep_lib.train_runs

  def spy(configs, workdirs, **kwargs):
    calls.append(len(configs))
    return train_runs(configs, workdirs, **kwargs)

  monkeypatch.setattr(sweep_lib, "train_runs", spy)
  paths = sweep_lib.main(
    ["--out", str(tmp_path), "--dataset", "synthetic", "--layers", "1", "--epochs", "2",
     "--unroll", "1", "--settings", "none", "output", "--rates", "0.3", "--seeds", "2",
     "--vary", "hidden=4,6"]
  )  # fmt: skip
  assert calls == [4, 4]  # one vmapped group per hidden size
  rows = list(csv.DictReader(paths["csv"].read_text().splitlines()))
  assert [(r["hidden"], r["placement"], r["seeds"]) for r in rows] == [
    ("4", "none", "2"),
    ("4", "output", "2"),
    ("6", "none", "2"),
    ("6", "output", "2"),
  ]
  assert (tmp_path / "runs" / "hidden=6" / "output_0.3" / "seed_1" / "summary.json").exists()
  calls.clear()
  sweep_lib.main(["--out", str(tmp_path), "--dataset", "synthetic", "--layers", "1",
                  "--epochs", "2", "--unroll", "1", "--settings", "none", "output",
                  "--rates", "0.3", "--seeds", "2", "--vary", "hidden=4,6"])  # fmt: skip
  assert calls == [4, 4]  # asked again: every run is read back (train_runs trains none)


def test_overfit_is_a_preset_of_the_sweep():
  import experiments.overfit as overfit

  args = overfit.Args(quick=True).resolved()
  study = overfit.sweep(args)
  assert isinstance(study, Sweep) and len(study.points()) == 18
  names = [n for n, _ in study.points()]
  assert names[:3] == ["none_0/seed_0", "none_0/seed_1", "input_0.2/seed_0"]
  assert dataclasses.replace(study.base, seed=0) == study.base


def test_a_bad_runs_at_once_is_one_line_and_writes_nothing(tmp_path, capsys):
  out = tmp_path / "sweep"
  with pytest.raises(SystemExit) as e:
    sweep_lib.main(["--out", str(out), "--dataset", "synthetic", "--epochs", "1",
                    "--seeds", "2", "--runs-at-once", "0"])  # fmt: skip
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: runs_at_once must be an int >= 1") and "\n" not in err
  assert not out.exists()
