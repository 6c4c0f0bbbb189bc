"""``Config``: validation messages, the ``config.json`` round trip, which runs may train
together, and what re-running a config in a run folder does."""

import dataclasses
import json

import pytest

from lstmdrop_jax.config import Config, check_resume, check_stackable, resume_kind
from lstmdrop_jax.placements import DropoutConfig

BASE = Config(dataset="synthetic", hidden=8, layers=1, epochs=3)


@pytest.mark.parametrize(
  ("changes", "field", "message"),
  [
    ({"hidden": 0}, "hidden", "hidden must be an integer >= 1, got 0"),
    ({"batch_size": 2.5}, "batch_size", "batch_size must be an integer >= 1, got 2.5"),
    ({"unroll": 0}, "unroll", r"unroll must be an integer >= 1 \(or unset for the default\)"),
    ({"early_stopping": -1}, "early_stopping", "early_stopping must be an integer >= 0, got -1"),
    ({"train_tokens": 1}, "train_tokens", r"train_tokens must be an integer >= 2 or unset"),
    ({"val_fraction": 1.0}, "val_fraction", r"val_fraction must lie in \(0, 1\), got 1.0"),
    ({"learning_rate": float("inf")}, "learning_rate", "learning_rate must be a positive"),
    ({"lr_decay": 0.5}, "lr_decay", "lr_decay divides the rate each epoch and must be >= 1"),
    ({"clip_norm": 0.0}, "clip_norm", "clip_norm must be > 0 or None, got 0.0"),
    ({"weight_decay": -0.1}, "weight_decay", "weight_decay must be >= 0"),
    ({"dropout": {"output": 0.3}}, "dropout", "dropout must be a DropoutConfig, got dict"),
    ({"mc_samples": 4}, "mc_samples", "no dropout: every pass is the same.*Set a dropout rate"),
    (
      {"mc_samples": 4, "checkpoint_every": 0, "dropout": DropoutConfig(output=0.3)},
      "mc_samples",
      "checkpoint_every=0 writes none; set checkpoint_every >= 1 or mc_samples=0",
    ),
    ({"layout": "NCT"}, "layout", "layout applies to the arrays of an .npz --dataset.*NTF"),
    ({"dataset": "NoSuchSet"}, "dataset", "unknown dataset 'NoSuchSet'"),
    (
      {"dropout": DropoutConfig(embedding=0.1)},
      "embedding",
      "dropout.embedding drops whole words and applies to language models.*dropout.input",
    ),
    ({"dataset": "text"}, "data-dir", "dataset 'text' needs --data-dir"),
    (
      {"dataset": "ptb", "data_dir": "x", "best_metric": "val_accuracy"},
      "best-metric",
      "a language model has no accuracy; use --best-metric val_loss",
    ),
  ],
)
def test_validation_names_the_field_and_what_to_do(changes, field, message):
  with pytest.raises(ValueError, match=message) as e:
    dataclasses.replace(BASE, **changes).validate()
  assert field in str(e.value)


@pytest.mark.parametrize(
  ("changes", "message"),
  [
    ({"lr_decay": 2.0, "schedule": "cosine"}, r"lr_decay belongs to schedules \['step'"),
    ({"decay_after": 2, "schedule": "cosine"}, "decay_after belongs to schedule 'step'"),
    ({"warmup_epochs": 2}, "warmup_epochs needs --schedule warmup_cosine"),
    ({"schedule": "warmup_cosine"}, r"needs 0 < warmup_epochs < epochs \(100\), got 0"),
    ({"schedule": "linear"}, "schedule must be one of"),
  ],
)
def test_bad_schedules_are_refused(changes, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(Config(), **changes).validate()


def test_plateau_config_is_checked():
  base = Config(dataset="synthetic", schedule="plateau", lr_decay=4.0)
  base.validate()
  with pytest.raises(ValueError, match="lr_decay, which must be > 1"):
    dataclasses.replace(base, lr_decay=1.0).validate()
  with pytest.raises(ValueError, match="plateau_patience belongs to schedule 'plateau'"):
    Config(dataset="synthetic", plateau_patience=3).validate()
  with pytest.raises(ValueError, match="plateau_patience must be an integer >= 1"):
    dataclasses.replace(base, plateau_patience=0).validate()
  with pytest.raises(ValueError, match="decay_after belongs to schedule 'step'"):
    dataclasses.replace(base, decay_after=2).validate()
  # Extending a plateau run is allowed: the rate depends on the epochs trained so far.
  assert check_resume(base, dataclasses.replace(base, epochs=base.epochs + 5))


def test_own_arrays_need_no_known_dataset_name_but_keep_their_layout_to_themselves():
  named = dataclasses.replace(BASE, dataset="my arrays")
  named.validate(external_data=True)  # the name is only a label
  with pytest.raises(ValueError, match="unknown dataset 'my arrays'"):
    named.validate()
  with pytest.raises(ValueError, match=r"layout to ArrayData\(\.\.\., layout='NCT'\)"):
    dataclasses.replace(named, layout="NCT").validate(external_data=True)
  # A text corpus's name on own arrays is a classification label, not a corpus.
  dataclasses.replace(BASE, dataset="ptb").validate(external_data=True)


def test_a_config_round_trips_through_its_json_dict():
  config = Config(
    dataset="synthetic", hidden=6, layers=3, unroll=2, compute_dtype="bfloat16", seed=7,
    dropout=DropoutConfig(input=0.1, recurrent=0.25, zoneout_c=0.05,
                          time_locked=["semeniuta", "input"], per_gate=True),
    schedule="warmup_cosine", warmup_epochs=2, clip_norm=None, early_stopping=4,
    best_metric="val_loss", mc_samples=3,
  )  # fmt: skip
  d = json.loads(json.dumps(config.to_dict()))
  assert Config.from_dict(d) == config
  assert d["dropout"]["time_locked"] == ["input", "semeniuta"]  # registry order
  # per_gate is written only when set, so older folders read as they were written.
  assert "per_gate" not in BASE.to_dict()["dropout"] and d["dropout"]["per_gate"] is True
  older = {k: v for k, v in d.items() if k not in ("mc_samples", "best_metric")}
  assert Config.from_dict(older) == dataclasses.replace(config, mc_samples=0, best_metric="auto")
  with pytest.raises(ValueError, match=r"unknown config fields \['colour'\]; see --help"):
    Config.from_dict({**d, "colour": "red"})


def test_runs_trained_together_may_differ_only_in_seed_and_dropout():
  runs = [dataclasses.replace(BASE, seed=s, dropout=DropoutConfig(output=0.1 * s)) for s in (1, 2)]
  check_stackable([BASE, *runs])
  with pytest.raises(
    ValueError, match=r"differ only in seed and dropout; these differ: \['hidden'"
  ):
    check_stackable([BASE, dataclasses.replace(runs[0], hidden=4, epochs=9)])
  with pytest.raises(ValueError, match=r"these differ: \['epochs'\]"):
    check_stackable([BASE, runs[0], dataclasses.replace(runs[1], epochs=9)])


def test_which_changes_extend_a_run():
  old = Config(epochs=20)
  assert check_resume(old, old) is False
  assert check_resume(old, dataclasses.replace(old, epochs=40)) is True
  assert check_resume(old, dataclasses.replace(old, early_stopping=5)) is True
  with pytest.raises(ValueError, match=r"different config \(hidden: 64 -> 32\).*new --workdir"):
    check_resume(old, dataclasses.replace(old, hidden=32, epochs=40))
  with pytest.raises(ValueError, match="can be extended, not shortened"):
    check_resume(old, dataclasses.replace(old, epochs=10))
  cosine = dataclasses.replace(old, schedule="cosine")
  with pytest.raises(ValueError, match="spans the run's 20 epochs: extending it to 40 would"):
    check_resume(cosine, dataclasses.replace(cosine, epochs=40))
  assert check_resume(cosine, dataclasses.replace(cosine, early_stopping=3)) is True
  sparse = dataclasses.replace(old, epochs=21, eval_every=2)  # epoch 21 was evaluated as the last
  with pytest.raises(ValueError, match="21 epochs evaluated every 2: its last epoch was evaluated"):
    check_resume(sparse, dataclasses.replace(sparse, epochs=40))
  on_grid = dataclasses.replace(old, eval_every=4)
  assert check_resume(on_grid, dataclasses.replace(on_grid, epochs=40)) is True


def test_resume_kind_says_what_rerunning_a_config_in_a_folder_does():
  old = BASE.to_dict()
  assert resume_kind(None, BASE, "runs/a") == "new"
  assert resume_kind(old, BASE, "runs/a") == "same"
  assert resume_kind(old, dataclasses.replace(BASE, epochs=5), "runs/a") == "extend"
  with pytest.raises(ValueError, match=r"^'runs/a' holds a run with a different config \(hidden"):
    resume_kind(old, dataclasses.replace(BASE, hidden=4), "runs/a")
  with pytest.raises(ValueError, match=r"runs/a/config\.json does not describe a run of this "):
    resume_kind({**old, "colour": "red"}, BASE, "runs/a")
  with pytest.raises(ValueError, match=r"\(unknown config fields \['colour'\].*new --workdir"):
    resume_kind({**old, "colour": "red"}, BASE, "runs/a")
