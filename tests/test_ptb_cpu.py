"""experiments/ptb_cpu.py: the example's recipe in our units, and how each phase picks its runs."""

import json

import pytest

from tests.helpers import load_script


def _study():
  return load_script("experiments/ptb_cpu.py", "ptb_cpu_study")


def _finished(folder, best_val):
  """A run folder whose summary gives ``best_val`` as its best validation perplexity."""
  folder.mkdir(parents=True)
  best = {"epoch": 40, "event": "eval", "val/ppl": best_val}
  (folder / "summary.json").write_text(json.dumps({"best": best, "final": best, "epochs": 40}))


def test_the_recipe_is_the_examples_update_in_our_loss_units():
  config = _study().recipe("data", seed=3)
  # Our loss sums the 35 steps' batch means: 35 times the example's per-token mean.
  assert config.learning_rate * 35 == pytest.approx(20.0)
  assert config.clip_norm == pytest.approx(0.25 * 35)
  assert (config.hidden, config.layers, config.num_steps, config.batch_size) == (200, 2, 35, 20)
  assert config.tie_weights and config.schedule == "plateau" and config.lr_decay == 4.0
  assert config.seed == 3 and config.dropout.active() == ("input", "between", "output")


def test_the_grid_chooses_each_recipes_lowest_best_validation(tmp_path):
  study = _study()
  for name, val in {"gal_a": 120, "gal_b": 110, "gal_c": 130}.items():
    _finished(tmp_path / f"{name}_s0", val)
  for name, val in {"awd_a": 100, "awd_b": 140, "awd_c": 150, "awd_d": 160}.items():
    _finished(tmp_path / f"{name}_s0", val)
  assert study.choose(tmp_path) == {"gal": "gal_b", "awd": "awd_a"}


@pytest.mark.parametrize(("gal", "awd", "better"), [(89.2, 88.9, "awd"), (88.0, 88.9, "gal")])
def test_phase_seeds_trains_seed_1_of_the_recipe_better_on_validation(tmp_path, gal, awd, better):
  study = _study()
  _finished(tmp_path / "gal_s0", gal)
  _finished(tmp_path / "awd_s0", awd)
  chosen = {"gal": "gal_b", "awd": "awd_c"}
  jobs = study.seed_jobs("data", chosen, tmp_path)
  assert list(jobs) == [f"{better}_s1"]
  config = jobs[f"{better}_s1"]
  assert config.seed == 1
  assert config.dropout == study.CANDIDATES[better][chosen[better]]


def test_phase_seeds_refuses_before_phase_full_has_finished(tmp_path):
  study = _study()
  _finished(tmp_path / "gal_s0", 89.2)
  (tmp_path / "awd_s0").mkdir()  # still training: no summary yet
  with pytest.raises(ValueError, match="awd_s0 has not finished; run --phase full first"):
    study.seed_jobs("data", {"gal": "gal_a", "awd": "awd_a"}, tmp_path)


def test_a_bad_phase_is_refused_in_one_line(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    _study().main(["--phase", "seed", "--out", str(tmp_path / "out")])
  assert str(e.value) == "error: --phase must be grid, full, seeds or all, got 'seed'"
  assert not (tmp_path / "out").exists()
