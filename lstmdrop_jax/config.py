"""A training run's configuration: ``Config``.

Every field is a command-line flag of ``python -m lstmdrop_jax.train`` (the
docstrings under the fields are the ``--help`` texts). ``config.json`` in a
run folder is ``Config.to_dict()``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

from lstmdrop_jax.dropout import RATE_FIELDS, DropoutConfig
from lstmdrop_jax.tasks import task_type


@dataclasses.dataclass(frozen=True)
class Config:
  """One training run. Every field is a command-line flag."""

  # Data.
  dataset: str = "GunPoint"
  """'synthetic', a UCR/UEA name (GunPoint, BasicMotions, ArrowHead, ItalyPowerDemand,
  JapaneseVowels, or any name aeon knows, with data_dir); or a word-level corpus for
  language modelling: 'ptb' (md5-checked) or 'text' (any corpus), with data_dir."""
  data_dir: str | None = None
  """Folder of the data files: PTB's ptb.{train,valid,test}.txt, a text corpus's
  {train,valid,test}.txt, or UCR .ts files not bundled with aeon."""
  val_fraction: float = 0.3
  """Fraction of the official training split held out for validation (classification)."""

  # Model.
  hidden: int = 64
  """LSTM units per layer."""
  layers: int = 2
  """Number of LSTM layers."""
  dropout: DropoutConfig = DropoutConfig()
  """Dropout rates by placement, and time-locked masks."""
  unroll: int | None = None
  """Time steps per scan iteration (default: 8 on accelerators, 1 on CPUs)."""
  compute_dtype: Literal["float32", "bfloat16"] = "float32"
  """Matmul dtype; the carry and gate arithmetic stay float32."""
  forget_bias: float | None = None
  """Added to the forget-gate bias at initialisation (default 1 for classifiers, 0 for LMs)."""
  init_scale: float | None = None
  """Language models: draw every parameter from U(-s, s) (Zaremba et al.)."""
  tie_weights: bool = False
  """Language models: share the embedding and softmax weights."""
  num_steps: int = 35
  """Language models: unrolled steps per batch (truncated BPTT)."""
  train_tokens: int | None = None
  """Language models: train on the first N training tokens only (smoke tests)."""

  optimizer: Literal["adam", "sgd"] = "adam"
  """Optimiser: Adam or plain SGD (Zaremba et al. use SGD)."""
  learning_rate: float = 1e-3
  """Initial learning rate (decayed by lr_decay after decay_after epochs)."""
  lr_decay: float = 1.0
  """Divide the learning rate by this once per epoch after decay_after epochs."""
  decay_after: int = 0
  """Epochs at the initial learning rate before the decay starts."""
  clip_norm: float | None = 5.0
  """Clip gradients to this global norm (None: no clipping)."""
  weight_decay: float = 0.0
  batch_size: int = 16
  epochs: int = 100
  early_stopping: int = 0
  """Stop after this many epochs without a better validation score (0: never)."""
  seed: int = 0
  """Seeds the initialisation, the train/validation split, data order and dropout masks."""

  # Evaluation and checkpoints.
  eval_every: int = 1
  """Evaluate every this many epochs (and always at the last)."""
  eval_batch_size: int = 256
  """Classification: examples per evaluation batch."""
  mc_samples: int = 0
  """Classification: also score the best checkpoint with this many Monte-Carlo dropout passes."""
  checkpoint_every: int = 10
  """Checkpoint every this many epochs (and always at the end)."""
  keep_checkpoints: int = 2
  """How many of the latest checkpoints to keep (the best is kept besides)."""

  def validate(self) -> None:
    """Raises ``ValueError`` naming the first bad field and what to do."""
    if not isinstance(self.dataset, str):
      raise ValueError(f"dataset must be a name, got {self.dataset!r}")
    positive = (
      "hidden layers num_steps batch_size epochs eval_every eval_batch_size "
      "checkpoint_every keep_checkpoints"
    )
    for name in positive.split():
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if self.unroll is not None and self.unroll < 1:
      raise ValueError(
        f"unroll must be an integer >= 1 (or unset for the default), got {self.unroll}"
      )
    for name in ("early_stopping", "mc_samples", "decay_after"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    if not 0.0 < self.val_fraction < 1.0:
      raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
    if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
      raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
    if not self.lr_decay >= 1.0:
      raise ValueError(
        f"lr_decay divides the rate each epoch and must be >= 1, got {self.lr_decay}"
      )
    if self.clip_norm is not None and not self.clip_norm > 0:
      raise ValueError(f"clip_norm must be > 0 or None, got {self.clip_norm}")
    if self.weight_decay < 0:
      raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
    if not isinstance(self.dropout, DropoutConfig):
      raise ValueError(f"dropout must be a DropoutConfig, got {type(self.dropout).__name__}")
    DropoutConfig(**self.to_dict()["dropout"])  # re-checks the rates
    task_type(self.dataset).check_config(self)  # the dataset, and what its task allows

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready dict (``config.json``)."""
    d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    drop = self.dropout
    d["dropout"] = {n: float(getattr(drop, n)) for n in RATE_FIELDS}
    d["dropout"]["time_locked"] = list(drop.time_locked)
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> Config:
    d = dict(d)
    drop = dict(d.pop("dropout"))
    drop["time_locked"] = tuple(drop.get("time_locked", ()))
    return cls(**d, dropout=DropoutConfig(**drop))


#: Fields that may differ between runs trained together (vmapped).
PER_RUN_FIELDS = ("seed", "dropout")


def check_stackable(configs: Sequence[Config]) -> None:
  """Raises ``ValueError`` unless the configs differ only in ``PER_RUN_FIELDS``."""
  ref = configs[0].to_dict()
  for c in configs[1:]:
    d = c.to_dict()
    diff = [k for k in ref if k not in PER_RUN_FIELDS and ref[k] != d[k]]
    if ref["dropout"]["time_locked"] != d["dropout"]["time_locked"]:
      diff.append("dropout.time_locked")
    if diff:
      raise ValueError(
        f"runs trained together may differ only in seed and dropout rates; these differ: {diff}"
      )
