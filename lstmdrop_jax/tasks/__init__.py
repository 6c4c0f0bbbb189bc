"""The seam between the training loop and a task: ``Task``.

The loop (``train.py``) is written once; everything that differs between
sequence classification and language modelling lives behind this protocol:
the data of every run, the model, how it is scored (``steps.Objective``),
the log records and which validation score is better. A task object serves
one group of runs trained together (one run per config, stacked on a
leading axis ``K``); it holds numpy arrays, and the loop moves them to the
devices once per epoch (training) or once per group (evaluation).

Two tasks exist:

* ``ClassificationTask`` (``classification.py``): UCR/UEA and synthetic
  series, one label each; each run has its own train/validation split.
* ``LanguageModelTask`` (``language_model.py``): word-level corpora
  (``"ptb"``, ``"text"``), truncated BPTT, one evaluation stream.

``task_type(dataset)`` picks one by dataset name. To add a task, implement
the protocol and return it there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import flax.linen as nn
import numpy as np

from lstmdrop_jax import data as data_lib
from lstmdrop_jax import steps

Record = dict[str, Any]


class Task(Protocol):
  """What the training loop asks of a task.

  Attributes:
    objective: how the model is called and scored.
    steps_per_epoch: training steps (batches) per epoch.
    sample_x: a batch of inputs that initialises the model.
    final_only_splits: evaluation splits scored only at a run's last epoch
      (the rest are scored at every evaluation).
    eval_splittable: whether an evaluation batch can be split over devices
      on its batch axis (else it is replicated).
  """

  objective: steps.Objective
  steps_per_epoch: int
  sample_x: np.ndarray
  final_only_splits: ClassVar[frozenset[str]]
  eval_splittable: ClassVar[bool]

  @classmethod
  def check_config(cls, config: Any, *, external_data: bool = False) -> None:
    """Raises ``ValueError`` for a config this task cannot train (before any data loads);
    ``external_data``: the data comes as arrays, not by the config's dataset name."""

  @classmethod
  def model_from(cls, config: Any, described: Record) -> nn.Module:
    """The model of ``config`` on data that ``describe`` described (a run's start record)."""

  def describe(self, k: int) -> Record:
    """What run ``k``'s start record says about its data (enough for ``model_from``)."""

  def train_epoch_batches(self, epochs: Sequence[int]) -> dict[str, np.ndarray]:
    """``[K, steps, B, ...]``: run k's batches of its (1-based) epoch ``epochs[k]``."""

  def eval_batches(self) -> dict[str, dict[str, np.ndarray]]:
    """``{split: [K, n, B, ...]}``: every evaluation split of every run."""

  def train_record(self, m: dict[str, float], config: Any, epoch: int) -> Record:
    """The log record of an epoch's summed training metrics ``m``."""

  def eval_record(self, split: str, m: dict[str, float]) -> Record:
    """The log entries of one split's summed evaluation metrics ``m``."""

  def better(self, record: Record, best: Record) -> bool:
    """Whether evaluation ``record`` beats ``best`` (early stopping, best checkpoint)."""

  def mc_evaluate(self, model: nn.Module, state: steps.TrainState, k: int) -> Record:
    """Scores run ``k``'s ``state`` with Monte-Carlo dropout (summary entries)."""


def task_name(dataset: str, *, external_data: bool = False) -> str:
  """The task that trains on ``dataset``: ``"language_model"`` for text corpora,
  ``"classification"`` otherwise (and always for your own arrays, ``external_data``)."""
  if data_lib.is_text_dataset(dataset) and not external_data:
    return "language_model"
  return "classification"


def task_type(dataset: str, *, external_data: bool = False) -> type[Task]:
  """The class of ``task_name(dataset, external_data=...)``."""
  return task_class(task_name(dataset, external_data=external_data))


def task_class(name: str) -> type[Task]:
  """The class of the task ``name`` (a ``task_name``)."""
  if name == "language_model":
    from lstmdrop_jax.tasks.language_model import LanguageModelTask

    return LanguageModelTask
  from lstmdrop_jax.tasks.classification import ClassificationTask

  return ClassificationTask


def build_model(config: Any, described: Record) -> nn.Module:
  """The model of ``config`` on the data that a task's ``describe`` described."""
  return task_type(config.dataset).model_from(config, described)


__all__ = ["Task", "build_model", "task_class", "task_name", "task_type"]
