"""What the training loop needs to know about each task's data.

``ClassificationData`` (UCR/UEA and synthetic series) and
``LanguageModelData`` (PTB) give the loop the same few things: stacked
batches for an epoch of every run (``[K, steps, ...]``), the evaluation
splits, a compiled-once evaluation of one split, the log records, and which
validation score is better. They hold numpy arrays; the loop moves them to
the device once per epoch (training) or once per run (evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lstmdrop_jax import data as data_lib
from lstmdrop_jax import steps
from lstmdrop_jax.data import ptb as ptb_lib


def _stack_batches(batches) -> dict[str, np.ndarray]:
  batches = list(batches)
  return {name: np.stack([b[name] for b in batches]) for name in batches[0]}


def _stack_runs(per_run: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {name: np.stack([r[name] for r in per_run]) for name in per_run[0]}


def _scan_sum(fn, state, batches):
  """Sums ``fn(state, batch)`` over the leading axis of ``batches``."""

  def body(total, batch):
    return steps.add_metrics(total, fn(state, batch)), None

  first = jax.tree.map(lambda a: a[0], batches)
  zero = jax.tree.map(jnp.zeros_like, jax.eval_shape(fn, state, first))
  total, _ = jax.lax.scan(body, zero, batches)
  return total


class ClassificationData:
  """Per-run splits of a classification dataset (the split depends on the seed)."""

  # Every split is scored at every evaluation (test accuracy at the best
  # validation epoch is reported).
  final_only_splits: frozenset[str] = frozenset()
  # Evaluation batches can be split over devices on their batch axis.
  eval_splittable = True

  def __init__(self, configs, multiple: int = 1):
    """``multiple``: evaluation batches are a multiple of this (the device count)."""
    self.configs = list(configs)
    c = self.configs[0]
    self.sets = [
      data_lib.load_dataset(
        c.dataset, seed=r.seed, val_fraction=c.val_fraction, data_dir=c.data_dir
      )
      for r in self.configs
    ]
    ref = self.sets[0]
    self.num_classes = ref.num_classes
    self.batch_size = c.batch_size
    self.steps_per_epoch = data_lib.num_batches(len(ref.train), c.batch_size)
    self.sample_x = jnp.zeros((c.batch_size, ref.length, ref.num_features), jnp.float32)
    bs = min(c.eval_batch_size, max(len(ref.train), len(ref.val), len(ref.test)))
    self._eval_bs = -(-bs // multiple) * multiple  # padded rows are masked

  def describe(self, k: int) -> dict[str, Any]:
    d = self.sets[k]
    return {
      "dataset": d.name,
      "classes": list(d.classes),
      "n_train": len(d.train),
      "n_val": len(d.val),
      "n_test": len(d.test),
      "length": d.length,
      "features": d.num_features,
    }

  def train_epoch_batches(self, epochs: Sequence[int]) -> dict[str, np.ndarray]:
    """``[K, steps, B, ...]``: run k's batches of its (1-based) epoch ``epochs[k]``."""
    return _stack_runs(
      [
        _stack_batches(data_lib.train_batches(d.train, self.batch_size, c.seed, e))
        for d, c, e in zip(self.sets, self.configs, epochs, strict=True)
      ]
    )

  def eval_batches(self) -> dict[str, dict[str, jax.Array]]:
    out = {}
    for split in ("train", "val", "test"):
      per_run = [
        _stack_batches(data_lib.eval_batches(getattr(d, split), self._eval_bs)) for d in self.sets
      ]
      out[split] = jax.tree.map(jnp.asarray, _stack_runs(per_run))
    return out

  def make_eval_split(self, model):
    eval_step = steps.make_eval_step(model)
    return lambda state, batches: _scan_sum(eval_step, state, batches)

  def train_record(self, m: dict[str, float], config, epoch: int) -> dict[str, Any]:
    n = max(m["count"], 1.0)
    return {
      "train_loss": m["loss_sum"] / n,  # with dropout, averaged over the epoch
      "train_accuracy_dropout": m["correct"] / n,
      "grad_norm": m["grad_norm"] / self.steps_per_epoch,
      "lr": steps.lr_at_epoch(config.learning_rate, epoch, config.lr_decay, config.decay_after),
    }

  def eval_record(self, split: str, m: dict[str, float]) -> dict[str, float]:
    n = max(m["count"], 1.0)
    return {
      f"{split}/loss": m["loss_sum"] / n,
      f"{split}/accuracy": m["correct"] / n,
      f"{split}/count": int(m["count"]),
    }

  @staticmethod
  def better(record: dict, best: dict) -> bool:
    """Higher validation accuracy; ties broken by lower validation loss."""
    return (record["val/accuracy"], -record["val/loss"]) > (best["val/accuracy"], -best["val/loss"])

  @staticmethod
  def postfix(bests: Sequence[dict | None]) -> str:
    accs = [b["val/accuracy"] for b in bests if b]
    return f"best val acc {np.mean(accs):.3f}" if accs else ""

  def mc_evaluate(self, model, run) -> dict[str, float]:
    """Scores the run's best checkpoint with Monte-Carlo dropout."""
    samples = run.config.mc_samples
    state, _ = run.ckpt.restore(run.template, which="best")
    mc_step = jax.jit(steps.make_mc_eval_step(model, samples))
    key = jax.random.fold_in(jax.random.key(run.config.seed), 0x4D43)  # "MC"
    out = {"samples": samples}
    for i, split in enumerate(("val", "test")):
      total = None
      for j, batch in enumerate(
        data_lib.eval_batches(getattr(self.sets[run.index], split), self._eval_bs)
      ):
        m = mc_step(state, batch, jax.random.fold_in(key, 1000 * i + j))
        total = steps.add_metrics(total, m)
      out.update(self.eval_record(split, {n: float(v) for n, v in total.items()}))
    return out


class LanguageModelData:
  """PTB streams for truncated BPTT (the same for every run: no shuffling)."""

  # The test perplexity is reported at the last epoch, as in Zaremba et al.
  final_only_splits: frozenset[str] = frozenset({"test"})
  # Evaluation is one stream (batch 1): replicated, not split.
  eval_splittable = False

  def __init__(self, configs):
    c = configs[0]
    self.k = len(configs)
    self.ptb = ptb_lib.load_ptb(c.data_dir)
    self.vocab_size = len(self.ptb.vocab)
    self.num_steps = c.num_steps
    train = self.ptb.train if c.train_tokens is None else self.ptb.train[: c.train_tokens]
    self.steps_per_epoch = ptb_lib.num_bptt_batches(len(train), c.batch_size, c.num_steps)
    self.sample_x = jnp.zeros((c.batch_size, c.num_steps), jnp.int32)
    xs, ys = zip(*ptb_lib.bptt_batches(train, c.batch_size, c.num_steps), strict=True)
    self._train = {"x": np.stack(xs), "y": np.stack(ys)}

  def describe(self, k: int) -> dict[str, Any]:
    return {
      "dataset": "ptb",
      "vocab_size": self.vocab_size,
      "tokens": {s: len(getattr(self.ptb, s)) for s in ("train", "valid", "test")},
    }

  def train_epoch_batches(self, epochs: Sequence[int]) -> dict[str, np.ndarray]:
    return {n: np.broadcast_to(a, (len(epochs), *a.shape)) for n, a in self._train.items()}

  def eval_batches(self) -> dict[str, dict[str, jax.Array]]:
    """One stream (batch 1), as in Zaremba et al.'s test: every token but the first is
    predicted once, the last window padded and masked."""
    out = {}
    for split, tokens in (("val", self.ptb.valid), ("test", self.ptb.test)):
      n = len(tokens) - 1
      windows = math.ceil(n / self.num_steps)
      pad = windows * self.num_steps - n
      x = np.pad(tokens[:-1], (0, pad)).reshape(windows, 1, self.num_steps)
      y = np.pad(tokens[1:], (0, pad)).reshape(windows, 1, self.num_steps)
      mask = (np.arange(windows * self.num_steps) < n).reshape(windows, 1, self.num_steps)
      batch = {"x": x.astype(np.int32), "y": y.astype(np.int32), "mask": mask}
      out[split] = {
        name: jnp.asarray(np.broadcast_to(a, (self.k, *a.shape))) for name, a in batch.items()
      }
    return out

  def make_eval_split(self, model):
    eval_step = steps.make_eval_step(model)

    def eval_split(state, batches):
      def body(carry_total, batch):
        carry, total = carry_total
        m, carry = eval_step(state, batch, carry)
        return (carry, steps.add_metrics(total, m)), None

      carry0 = model.initialize_carry(1)
      zero = {"loss_sum": jnp.zeros(()), "count": jnp.zeros(())}
      (_, total), _ = jax.lax.scan(body, (carry0, zero), batches)
      return total

    return eval_split

  def train_record(self, m: dict[str, float], config, epoch: int) -> dict[str, Any]:
    return {
      "train_ppl": math.exp(min(m["loss_sum"] / m["count"], 700.0)),
      "grad_norm": m["grad_norm"] / self.steps_per_epoch,
      "lr": steps.lr_at_epoch(config.learning_rate, epoch, config.lr_decay, config.decay_after),
    }

  @staticmethod
  def eval_record(split: str, m: dict[str, float]) -> dict[str, float]:
    nll = m["loss_sum"] / m["count"]
    return {f"{split}/loss": nll, f"{split}/ppl": math.exp(min(nll, 700.0))}

  @staticmethod
  def better(record: dict, best: dict) -> bool:
    return record["val/loss"] < best["val/loss"]

  @staticmethod
  def postfix(bests: Sequence[dict | None]) -> str:
    ppl = [b["val/ppl"] for b in bests if b]
    return f"best val ppl {min(ppl):.1f}" if ppl else ""
