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

from lstmdrop_jax.data.arrays import check_layout
from lstmdrop_jax.optim import DECAYING, ENDS_AT_LAST_EPOCH, SCHEDULES
from lstmdrop_jax.placements import RATE_FIELDS, DropoutConfig
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
  layout: Literal["NTF", "NCT"] = "NTF"
  """How the x arrays of an .npz --dataset are laid out: NTF [N, time, features], or NCT
  [N, channels, time] (aeon's, transposed on loading). Named datasets need no layout."""

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
  head_block_rows: int | None = None
  """Language models: train the softmax this many of a batch's B*T rows at a time, never
  holding all its logits. On a CPU whose cache the B*T*V logits outgrow, the fewest blocks
  that fit it are fastest (350 for batch 20, 35 steps and 10,000 words on a 32 MiB cache:
  1.4x the step's speed); unset: all rows at once. The same model, rounded differently."""
  num_steps: int = 35
  """Language models: unrolled steps per batch (truncated BPTT)."""
  train_tokens: int | None = None
  """Language models: train on the first N training tokens only (smoke tests)."""
  eval_tokens: int | None = None
  """Language models: score validation and test on their first N tokens only (smoke tests)."""

  optimizer: Literal["adam", "sgd"] = "adam"
  """Optimiser: Adam or plain SGD (Zaremba et al. use SGD)."""
  learning_rate: float = 1e-3
  """Initial (peak, with warm-up) learning rate."""
  schedule: Literal["constant", "step", "cosine", "warmup_cosine", "plateau"] = "step"
  """Learning-rate schedule: constant; step (divided by lr_decay per epoch after decay_after
  epochs; constant with the default lr_decay 1); cosine decay to 0 over the run; linear
  warm-up over warmup_epochs, then cosine decay to 0; plateau (divided by lr_decay when
  plateau_patience evaluations in a row bring no better validation loss)."""
  lr_decay: float = 1.0
  """Schedules 'step' and 'plateau': divide the learning rate by this (step: once per epoch
  after decay_after epochs; plateau: when the validation loss stops improving)."""
  plateau_patience: int = 1
  """Schedule 'plateau': evaluations in a row without a better validation loss before the
  learning rate is divided (1: after every such evaluation, as PyTorch's word-language-model
  example does)."""
  decay_after: int = 0
  """Schedule 'step': epochs at the initial learning rate before the decay starts."""
  warmup_epochs: int = 0
  """Schedule 'warmup_cosine': epochs of linear warm-up from 0."""
  clip_norm: float | None = 5.0
  """Clip gradients to this global norm (None: no clipping)."""
  weight_decay: float = 0.0
  batch_size: int = 16
  epochs: int = 100
  early_stopping: int = 0
  """Stop at the first evaluation at least this many epochs after the best validation
  score (0: never)."""
  best_metric: Literal["auto", "val_accuracy", "val_loss"] = "auto"
  """The validation score that picks the best checkpoint and drives early stopping (auto:
  accuracy, ties broken by loss, for classifiers; loss for language models)."""
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
  """Checkpoint every this many epochs and at the end; the best-scoring state since the
  last checkpoint is written as the best checkpoint with the next one. 0 writes no
  checkpoints: the run cannot resume (for a machine whose disk does not outlast the
  call), and ``mc_samples`` is unavailable."""
  keep_checkpoints: int = 2
  """How many of the latest checkpoints to keep (the best is kept besides)."""

  def validate(self, *, external_data: bool = False) -> None:
    """Raises ``ValueError`` naming the first bad field and what to do.

    ``external_data``: the data comes as arrays (``train_runs(..., data=)``),
    so ``dataset`` is only its label.
    """
    if not isinstance(self.dataset, str):
      raise ValueError(f"dataset must be a name, got {self.dataset!r}")
    positive = (
      "hidden layers num_steps batch_size epochs eval_every eval_batch_size keep_checkpoints "
      "plateau_patience"
    )
    for name in positive.split():
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if self.head_block_rows is not None and (
      not isinstance(self.head_block_rows, int) or self.head_block_rows < 1
    ):
      raise ValueError(
        f"head_block_rows must be an integer >= 1 (or unset: all rows at once), got "
        f"{self.head_block_rows!r}"
      )
    if self.unroll is not None and self.unroll < 1:
      raise ValueError(
        f"unroll must be an integer >= 1 (or unset for the default), got {self.unroll}"
      )
    nonnegative = "early_stopping mc_samples decay_after warmup_epochs checkpoint_every"
    for name in nonnegative.split():
      value = getattr(self, name)
      if not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    for name in ("train_tokens", "eval_tokens"):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value < 2):
        raise ValueError(f"{name} must be an integer >= 2 or unset (all tokens), got {value!r}")
    self._validate_mc()
    self._validate_layout(external_data)
    if not 0.0 < self.val_fraction < 1.0:
      raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
    if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
      raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
    if not self.lr_decay >= 1.0:
      raise ValueError(
        f"lr_decay divides the rate each epoch and must be >= 1, got {self.lr_decay}"
      )
    self._validate_schedule()
    if self.clip_norm is not None and not self.clip_norm > 0:
      raise ValueError(f"clip_norm must be > 0 or None, got {self.clip_norm}")
    if self.weight_decay < 0:
      raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
    if not isinstance(self.dropout, DropoutConfig):
      raise ValueError(f"dropout must be a DropoutConfig, got {type(self.dropout).__name__}")
    DropoutConfig(**self.to_dict()["dropout"])  # re-checks the rates
    task = task_type(self.dataset, external_data=external_data)
    task.check_config(self, external_data=external_data)  # the dataset; what its task allows

  def _validate_mc(self) -> None:
    if self.mc_samples and not self.dropout.active():
      raise ValueError(
        "mc_samples averages passes with dropout on, and this run has no dropout: every pass "
        "is the same and the spread is zero by construction. Set a dropout rate, or "
        "mc_samples=0"
      )
    if self.mc_samples and not self.checkpoint_every:
      raise ValueError(
        "mc_samples scores the best checkpoint, and checkpoint_every=0 writes none; "
        "set checkpoint_every >= 1 or mc_samples=0"
      )

  def _validate_layout(self, external_data: bool) -> None:
    check_layout(self.layout)
    if self.layout != "NTF" and external_data:
      raise ValueError(
        "layout applies to an .npz --dataset; give your own arrays' layout to "
        "ArrayData(..., layout='NCT') and leave Config.layout at NTF"
      )
    if self.layout != "NTF" and not self.dataset.endswith(".npz"):
      raise ValueError(
        f"layout applies to the arrays of an .npz --dataset; {self.dataset!r} is read by the "
        "library, which knows its layout: leave --layout at NTF"
      )

  def _validate_schedule(self) -> None:
    if self.schedule not in SCHEDULES:
      raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
    if self.schedule != "step" and self.decay_after:
      raise ValueError(f"decay_after belongs to schedule 'step', not {self.schedule!r}")
    if self.schedule not in DECAYING and self.lr_decay != 1.0:
      raise ValueError(f"lr_decay belongs to schedules {list(DECAYING)}, not {self.schedule!r}")
    if self.schedule == "plateau" and not self.lr_decay > 1.0:
      raise ValueError(
        f"schedule 'plateau' divides the rate by lr_decay, which must be > 1, got {self.lr_decay}"
      )
    if self.schedule != "plateau" and self.plateau_patience != 1:
      raise ValueError("plateau_patience belongs to schedule 'plateau'")
    if self.warmup_epochs and self.schedule != "warmup_cosine":
      raise ValueError("warmup_epochs needs --schedule warmup_cosine")
    if self.schedule == "warmup_cosine" and not 0 < self.warmup_epochs < self.epochs:
      raise ValueError(
        f"schedule 'warmup_cosine' needs 0 < warmup_epochs < epochs ({self.epochs}), got "
        f"{self.warmup_epochs}"
      )

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready dict (``config.json``)."""
    d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    drop = self.dropout
    d["dropout"] = {n: float(getattr(drop, n)) for n in RATE_FIELDS}
    d["dropout"]["time_locked"] = list(drop.time_locked)
    if drop.per_gate:  # written only when set: older run folders read the same
      d["dropout"]["per_gate"] = True
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> Config:
    """The config of a ``to_dict`` (fields it lacks take their defaults).

    Raises:
      ValueError: unknown fields (the message names them).
    """
    d = dict(d)
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"unknown config fields {unknown}; see --help for the valid ones")
    drop = dict(d.pop("dropout", {}))
    drop["time_locked"] = tuple(drop.get("time_locked", ()))
    return cls(**d, dropout=DropoutConfig(**drop))


#: Fields that may differ between runs trained together (vmapped).
PER_RUN_FIELDS = ("seed", "dropout")
#: Fields that may change when a run is re-run in its folder: more epochs, or
#: another early-stopping patience, extend it (``check_resume``).
EXTENDABLE_FIELDS = ("epochs", "early_stopping")


def check_resume(old: Config, new: Config) -> bool:
  """Whether ``new`` may continue the run of ``old``: True if it extends it.

  Raises:
    ValueError: a field outside ``EXTENDABLE_FIELDS`` differs (the message
      lists them), fewer epochs, or more epochs of a schedule that spans the
      run's epochs or of a run whose last epoch is off its evaluation grid.
  """
  a, b = old.to_dict(), new.to_dict()
  diff = sorted(k for k in a if a[k] != b[k])
  if not diff:
    return False
  fixed = [k for k in diff if k not in EXTENDABLE_FIELDS]
  if fixed:
    details = ", ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in fixed[:6])
    raise ValueError(
      f"holds a run with a different config ({details}); re-run with the same config to "
      f"resume it (only {', '.join(EXTENDABLE_FIELDS)} may change, to extend it), or choose "
      "a new --workdir"
    )
  if new.epochs < old.epochs:
    raise ValueError(
      f"holds a run of {old.epochs} epochs; a run can be extended, not shortened (epochs "
      f"{old.epochs} -> {new.epochs})"
    )
  if new.epochs != old.epochs and old.schedule in ENDS_AT_LAST_EPOCH:
    raise ValueError(
      f"holds a run with schedule {old.schedule!r}, which spans the run's {old.epochs} epochs: "
      f"extending it to {new.epochs} would change the learning rate of epochs already "
      "trained. Train the longer run in a new --workdir"
    )
  if new.epochs != old.epochs and old.epochs % old.eval_every:
    raise ValueError(
      f"holds a run of {old.epochs} epochs evaluated every {old.eval_every}: its last epoch "
      f"was evaluated, which a run of {new.epochs} epochs would not do, and that evaluation "
      "can move its best checkpoint, early stopping and a plateau schedule. Extend runs "
      "whose epochs are a multiple of --eval-every, or train the longer run in a new --workdir"
    )
  return True


def check_stackable(configs: Sequence[Config]) -> None:
  """Raises ``ValueError`` unless the configs differ only in ``PER_RUN_FIELDS``."""
  ref = configs[0].to_dict()
  for c in configs[1:]:
    d = c.to_dict()
    diff = [k for k in ref if k not in PER_RUN_FIELDS and ref[k] != d[k]]
    if diff:
      raise ValueError(
        f"runs trained together may differ only in seed and dropout; these differ: {diff}"
      )


def resume_kind(old: dict[str, Any] | None, new: Config, where: Any) -> str:
  """What re-running ``new`` does to the run whose ``config.json`` is ``old``:
  ``"new"`` (no run yet), ``"same"`` (resume it, or read it back) or ``"extend"``.

  Raises:
    ValueError: ``check_resume`` refuses (the message names ``where``), or
      ``old`` is not a config of this version.
  """
  if old is None:
    return "new"
  try:
    old_config = Config.from_dict(old)
  except (TypeError, ValueError) as e:
    raise ValueError(
      f"{where}/config.json does not describe a run of this version ({e}); start the run "
      "afresh in a new --workdir"
    ) from None
  try:
    return "extend" if check_resume(old_config, new) else "same"
  except ValueError as e:
    raise ValueError(f"{str(where)!r} {e}") from None
