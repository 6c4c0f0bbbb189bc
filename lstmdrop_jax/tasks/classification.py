"""Sequence classification: UCR/UEA and synthetic series, one label each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lstmdrop_jax import data as data_lib
from lstmdrop_jax import optim, steps
from lstmdrop_jax.data.batching import stack_runs
from lstmdrop_jax.models import SequenceClassifier

#: The seed of the Monte-Carlo passes' keys: fold_in(key(seed), MC_STREAM).
MC_STREAM = 0x4D43  # "MC"


class ClassificationTask:
  """Per-run splits of a classification dataset (the split depends on the seed)."""

  objective = steps.CLASSIFIER
  # Every split is scored at every evaluation (test accuracy at the best
  # validation epoch is reported).
  final_only_splits: frozenset[str] = frozenset()
  eval_splittable = True

  @classmethod
  def check_config(cls, config: Any, *, external_data: bool = False) -> None:
    if not external_data:
      data_lib.check_dataset_name(config.dataset, config.data_dir)
    lm_only = config.dropout.lm_only_on()
    if lm_only:
      raise ValueError(
        f"dropout.{lm_only[0]} drops whole words and applies to language models (datasets "
        f"{', '.join(data_lib.TEXT_DATASETS)}) only; use dropout.input on features"
      )

  def __init__(self, configs: Sequence[Any], *, devices: int = 1, data: Any = None):
    """``data``: your own ``ArrayData`` (the configs' ``dataset`` is then its label)."""
    self.configs = list(configs)
    c = self.configs[0]
    if data is None and c.dataset.endswith(".npz"):  # read once for every run
      data = data_lib.ArrayData.from_npz(c.dataset, c.layout)
    self.sets = [
      data_lib.load_dataset(
        c.dataset, seed=r.seed, val_fraction=c.val_fraction, data_dir=c.data_dir, arrays=data
      )
      for r in self.configs
    ]
    ref = self.sets[0]
    if c.batch_size > len(ref.train):
      raise ValueError(
        f"batch_size {c.batch_size} is larger than the training split of {c.dataset} "
        f"({len(ref.train)} series after holding out val_fraction={c.val_fraction}); use "
        f"--batch-size {len(ref.train)} or less"
      )
    self.num_classes = ref.num_classes
    self.batch_size = c.batch_size
    self.steps_per_epoch = data_lib.num_batches(len(ref.train), c.batch_size)
    self.sample_x = np.zeros((c.batch_size, ref.length, ref.num_features), np.float32)
    rounded = lambda n: -(-min(c.eval_batch_size, n) // devices) * devices  # pads are masked
    # Monte-Carlo batches (their masks depend on the shape) share the largest split's size;
    # each split's deterministic evaluation is batched to its own size, so a small
    # validation split is not padded to the test split's.
    self._eval_bs = rounded(max(len(getattr(ref, s)) for s in ref.splits))
    self._split_bs = {s: rounded(len(getattr(ref, s))) for s in ref.splits}

  @classmethod
  def model_from(cls, config: Any, described: dict[str, Any]) -> SequenceClassifier:
    return SequenceClassifier(
      num_classes=len(described["classes"]),
      hidden=config.hidden,
      layers=config.layers,
      dropout=config.dropout,
      unroll=config.unroll,
      compute_dtype=jnp.dtype(config.compute_dtype),
      forget_bias=1.0 if config.forget_bias is None else config.forget_bias,
    )

  def describe(self, k: int) -> dict[str, Any]:
    d = self.sets[k]
    return {
      "dataset": d.name,
      "classes": list(d.classes),
      "n_train": len(d.train),
      "n_val": len(d.val),
      "n_test": None if d.test is None else len(d.test),
      "length": d.length,
      "features": d.num_features,
      **({"normalizer": d.normalizer.to_dict()} if d.normalizer is not None else {}),
      **({"fingerprint": d.fingerprint} if d.fingerprint else {}),
    }

  def train_epoch_batches(self, epochs: Sequence[int]) -> dict[str, np.ndarray]:
    return stack_runs(
      [
        stack_runs(data_lib.train_batches(d.train, self.batch_size, c.seed, e))
        for d, c, e in zip(self.sets, self.configs, epochs, strict=True)
      ]
    )

  def eval_batches(self) -> dict[str, dict[str, np.ndarray]]:
    batches = lambda d, split: stack_runs(
      data_lib.eval_batches(getattr(d, split), self._split_bs[split])
    )
    splits = self.sets[0].splits
    return {split: stack_runs([batches(d, split) for d in self.sets]) for split in splits}

  def train_record(self, m: dict[str, float], config: Any, epoch: int) -> dict[str, Any]:
    n = max(m["count"], 1.0)
    return {
      "train_loss": m["loss_sum"] / n,  # with dropout, averaged over the epoch
      "train_accuracy_dropout": m["correct"] / n,
      "grad_norm": m["grad_norm"] / self.steps_per_epoch,
      "lr": optim.lr_of_epoch(config, epoch, self.steps_per_epoch, m.get("lr_scale", 1.0)),
    }

  @staticmethod
  def eval_record(split: str, m: dict[str, float]) -> dict[str, float]:
    n = max(m["count"], 1.0)
    return {
      f"{split}/loss": m["loss_sum"] / n,
      f"{split}/accuracy": m["correct"] / n,
      f"{split}/count": int(m["count"]),
    }

  def better(self, record: dict, best: dict) -> bool:
    """Lower validation loss with ``best_metric='val_loss'``; else higher validation
    accuracy, ties broken by lower validation loss."""
    if self.configs[0].best_metric == "val_loss":
      return record["val/loss"] < best["val/loss"]
    return (record["val/accuracy"], -record["val/loss"]) > (best["val/accuracy"], -best["val/loss"])

  def mc_evaluate(self, model, state: steps.TrainState, k: int) -> dict[str, Any]:
    """Scores ``state`` (run ``k``'s) on val and test with Monte-Carlo dropout."""
    config = self.configs[k]
    samples = config.mc_samples
    mc_step = jax.jit(steps.make_mc_eval_step(model, samples))
    key = jax.random.fold_in(jax.random.key(config.seed), MC_STREAM)
    out: dict[str, Any] = {"samples": samples}
    for i, split in enumerate(("val", "test")):
      if split not in self.sets[k].splits:
        continue
      total = None
      for j, batch in enumerate(data_lib.eval_batches(getattr(self.sets[k], split), self._eval_bs)):
        m = mc_step(state, batch, jax.random.fold_in(key, 1000 * i + j))
        total = steps.add_metrics(total, m)
      out.update(self.eval_record(split, {n: float(v) for n, v in total.items()}))
    return out
