"""Tasks: which task trains a dataset, the batches of a group of runs, the model a run's
start record describes, and which evaluation is better."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from lstmdrop_jax.config import Config
from lstmdrop_jax.models import LanguageModel, SequenceClassifier
from lstmdrop_jax.tasks import build_model, task_class, task_name, task_type
from lstmdrop_jax.tasks.classification import ClassificationTask
from lstmdrop_jax.tasks.language_model import LanguageModelTask
from tests.helpers import write_corpus

CLASSIFIER = Config(
  dataset="synthetic", hidden=4, layers=1, batch_size=16, eval_batch_size=64, unroll=1
)


@pytest.fixture(scope="module")
def lm_config(tmp_path_factory):
  corpus = write_corpus(tmp_path_factory.mktemp("corpus"))
  return Config(
    dataset="text", data_dir=str(corpus), hidden=4, layers=1, batch_size=4, num_steps=5, unroll=1
  )


def test_the_dataset_name_picks_the_task_and_own_arrays_are_classified():
  assert task_name("ptb") == task_name("text") == "language_model"
  for name in ("synthetic", "GunPoint", "mine.npz"):
    assert task_name(name) == "classification"
  assert task_name("ptb", external_data=True) == "classification"  # own arrays, any label
  assert task_type("text") is task_class("language_model") is LanguageModelTask
  assert task_type("synthetic") is task_class("classification") is ClassificationTask
  assert task_type("ptb", external_data=True) is ClassificationTask


def test_a_classification_groups_batches_are_each_runs_own_stacked():
  runs = [CLASSIFIER, dataclasses.replace(CLASSIFIER, seed=1)]
  task = ClassificationTask(runs)
  described = task.describe(0)
  T, F = described["length"], described["features"]
  K, S, B = 2, task.steps_per_epoch, CLASSIFIER.batch_size
  batches = task.train_epoch_batches([1, 3])
  assert batches["x"].shape == (K, S, B, T, F)
  assert batches["y"].shape == batches["mask"].shape == (K, S, B)
  # Every training series once an epoch; run k's rows are those of its epoch alone.
  assert batches["mask"].sum(axis=(1, 2)).tolist() == [described["n_train"]] * K
  for k, epoch in enumerate((1, 3)):
    alone = ClassificationTask([runs[k]]).train_epoch_batches([epoch])
    for name, a in alone.items():
      np.testing.assert_array_equal(batches[name][k], a[0])
  assert not np.array_equal(batches["x"][0], batches["x"][1])  # seeds split differently
  evals = task.eval_batches()
  assert set(evals) == {"train", "val", "test"}
  for split, n in (("val", described["n_val"]), ("test", described["n_test"])):
    assert evals[split]["x"].shape[:1] == (K,) and evals[split]["x"].shape[3:] == (T, F)
    assert evals[split]["mask"].sum(axis=(1, 2)).tolist() == [n] * K


def test_a_language_models_batches_are_the_same_streams_for_every_run(lm_config):
  runs = [lm_config, dataclasses.replace(lm_config, seed=1)]
  task = LanguageModelTask(runs)
  K, S, B, N = 2, task.steps_per_epoch, lm_config.batch_size, lm_config.num_steps
  batches = task.train_epoch_batches([1, 2])
  assert batches["x"].shape == batches["y"].shape == (K, S, B, N)
  np.testing.assert_array_equal(batches["x"][0], batches["x"][1])  # no shuffling
  np.testing.assert_array_equal(batches["y"][0, :, :, :-1], batches["x"][0, :, :, 1:])
  evals = task.eval_batches()
  val, test = evals["val"]["x"], evals["test"]["x"]
  assert val.shape[0] == test.shape[0] == K
  assert val.shape[2:] == (B, N) and test.shape[2:] == (1, N)  # B streams; one stream
  assert task.final_only_splits == {"test"}


@pytest.mark.parametrize("kind", ["classifier", "language_model"])
def test_a_start_record_describes_enough_to_build_the_model(kind, lm_config):
  config = CLASSIFIER if kind == "classifier" else lm_config
  task = task_type(config.dataset)([config])
  described = json.loads(json.dumps(task.describe(0)))  # as the run folder holds it
  model = build_model(config, described)
  assert model == type(task).model_from(config, described)
  params = model.init(jax.random.key(0), task.sample_x)["params"]
  if kind == "classifier":
    assert isinstance(model, SequenceClassifier) and model.forget_bias == 1.0
    assert model.num_classes == len(described["classes"])
    assert params["head"]["kernel"].shape == (config.hidden, 1)  # two classes: one logit
  else:
    assert isinstance(model, LanguageModel) and model.forget_bias == 0.0
    assert params["head"]["kernel"].shape == (config.hidden, described["vocab_size"])
  assert model.hidden == config.hidden and model.dropout == config.dropout


def test_better_is_higher_accuracy_then_lower_loss_or_the_chosen_loss_alone(lm_config):
  rec = lambda acc, loss: {"val/accuracy": acc, "val/loss": loss}
  by_accuracy = ClassificationTask([CLASSIFIER])
  assert by_accuracy.better(rec(0.9, 0.5), rec(0.8, 0.1))
  assert by_accuracy.better(rec(0.8, 0.2), rec(0.8, 0.3))  # a tie broken by the loss
  assert not by_accuracy.better(rec(0.8, 0.3), rec(0.8, 0.3))
  by_loss = ClassificationTask([dataclasses.replace(CLASSIFIER, best_metric="val_loss")])
  assert by_loss.better(rec(0.5, 0.1), rec(0.9, 0.2))
  assert not by_loss.better(rec(0.9, 0.3), rec(0.5, 0.2))
  lm = LanguageModelTask([lm_config])
  assert lm.better({"val/loss": 4.0}, {"val/loss": 4.1})
  assert not lm.better({"val/loss": 4.1}, {"val/loss": 4.1})
