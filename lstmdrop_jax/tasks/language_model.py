"""Word-level language modelling: truncated BPTT over a text corpus."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lstmdrop_jax import data as data_lib
from lstmdrop_jax import optim, steps
from lstmdrop_jax.data import text
from lstmdrop_jax.models import LanguageModel


class LanguageModelTask:
  """One corpus's streams for truncated BPTT (the same for every run: no shuffling)."""

  objective = steps.LANGUAGE_MODEL
  # The test perplexity is reported at the last epoch, as in Zaremba et al.
  final_only_splits: frozenset[str] = frozenset({"test"})
  # Evaluation streams are few (validation: the batch size; test: one): replicated.
  eval_splittable = False

  @classmethod
  def check_config(cls, config: Any, *, external_data: bool = False) -> None:
    if external_data:
      raise ValueError("own arrays are for classification; a language model reads a corpus")
    data_lib.check_text_dataset(config.dataset, config.data_dir)
    if config.best_metric == "val_accuracy":
      raise ValueError("a language model has no accuracy; use --best-metric val_loss (or auto)")

  def __init__(self, configs: Sequence[Any], *, devices: int = 1, data: Any = None):
    del devices  # the evaluation stream is replicated
    if data is not None:
      raise ValueError("own arrays are for classification; a language model reads a corpus")
    c = configs[0]
    self.k = len(configs)
    self.configs = list(configs)
    self.corpus = data_lib.load_text(c.dataset, c.data_dir)
    self.name = c.dataset
    self.vocab_size = self.corpus.vocab_size
    self.config = c
    train = self.corpus.train if c.train_tokens is None else self.corpus.train[: c.train_tokens]
    self.train_tokens = len(train)
    self.steps_per_epoch = text.num_bptt_batches(len(train), c.batch_size, c.num_steps)
    self.sample_x = np.zeros((c.batch_size, c.num_steps), np.int32)
    xs, ys = zip(*text.bptt_batches(train, c.batch_size, c.num_steps), strict=True)
    self._train = {"x": np.stack(xs), "y": np.stack(ys)}

  @classmethod
  def model_from(cls, config: Any, described: dict[str, Any]) -> LanguageModel:
    return LanguageModel(
      vocab_size=described["vocab_size"],
      hidden=config.hidden,
      layers=config.layers,
      dropout=config.dropout,
      unroll=config.unroll,
      compute_dtype=jnp.dtype(config.compute_dtype),
      init_scale=config.init_scale,
      tie_weights=config.tie_weights,
      head_block_rows=config.head_block_rows,
      forget_bias=0.0 if config.forget_bias is None else config.forget_bias,
    )

  def _eval_split(self, split: str) -> np.ndarray:
    tokens = getattr(self.corpus, split)
    return tokens if self.config.eval_tokens is None else tokens[: self.config.eval_tokens]

  def describe(self, k: int) -> dict[str, Any]:
    tokens = {s: len(self._eval_split(s)) for s in ("valid", "test")}
    return {
      "dataset": self.name,
      "vocab_size": self.vocab_size,
      "tokens": {"train": self.train_tokens, **tokens},
    }

  def train_epoch_batches(self, epochs: Sequence[int]) -> dict[str, np.ndarray]:
    return {n: np.broadcast_to(a, (len(epochs), *a.shape)) for n, a in self._train.items()}

  def eval_batches(self) -> dict[str, dict[str, np.ndarray]]:
    """Validation in ``batch_size`` streams and test as one stream, as in Zaremba et
    al.'s code (``text.eval_stream``)."""
    out = {}
    c = self.config
    for split, tokens, streams in (
      ("val", self._eval_split("valid"), c.batch_size),
      ("test", self._eval_split("test"), 1),
    ):
      batch = text.eval_stream(tokens, c.num_steps, streams)
      out[split] = {name: np.broadcast_to(a, (self.k, *a.shape)) for name, a in batch.items()}
    return out

  def train_record(self, m: dict[str, float], config: Any, epoch: int) -> dict[str, Any]:
    return {
      "train_ppl": math.exp(min(m["loss_sum"] / m["count"], 700.0)),
      "grad_norm": m["grad_norm"] / self.steps_per_epoch,
      "lr": optim.lr_of_epoch(config, epoch, self.steps_per_epoch, m.get("lr_scale", 1.0)),
    }

  @staticmethod
  def eval_record(split: str, m: dict[str, float]) -> dict[str, float]:
    nll = m["loss_sum"] / m["count"]
    return {f"{split}/loss": nll, f"{split}/ppl": math.exp(min(nll, 700.0))}

  @staticmethod
  def better(record: dict, best: dict) -> bool:
    return record["val/loss"] < best["val/loss"]

  def mc_evaluate(self, model, state: steps.TrainState, k: int) -> dict[str, Any]:
    """Run ``k``'s test perplexity with Monte-Carlo dropout (Gal & Ghahramani's "MC
    dropout"): each of ``mc_samples`` passes reads the whole test stream with dropout on,
    carrying its own state, and every word's probability is the mean over the passes."""
    config = self.configs[k]
    stream = text.eval_stream(self._eval_split("test"), config.num_steps, 1)
    key = jax.random.fold_in(jax.random.key(config.seed), MC_STREAM)
    m = mc_test_nll(model, state, stream, key, config.mc_samples)
    record = self.eval_record("test", {"loss_sum": m["nll"], "count": m["count"]})
    return {"samples": config.mc_samples, **record}


#: The seed of the Monte-Carlo passes' keys: fold_in(key(seed), MC_STREAM).
MC_STREAM = 0x4D43  # "MC"


def mc_test_nll(
  model: LanguageModel, state: steps.TrainState, stream: dict, key: jax.Array, samples: int
) -> dict[str, Any]:
  """``nll``: the summed negative log of each word's probability averaged over ``samples``
  passes with dropout on; ``count``: the words; ``pass_nll [samples]``: each pass's own
  summed negative log-likelihood. Over ``stream`` (``text.eval_stream``'s
  ``[windows, streams, num_steps]`` arrays). The passes run vmapped, window by window in
  one scan; window ``w`` of pass ``s`` draws its masks from ``fold_in(split(key)[s], w)``."""
  if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
    raise ValueError(f"Monte-Carlo samples must be an int >= 1, got {samples!r}")
  stream_j = {n: jnp.asarray(a) for n, a in stream.items()}
  nll, pass_nll = _mc_scan(model, samples, state, jax.random.split(key, samples), stream_j)
  count = float(np.sum(stream["mask"]))
  return {"nll": float(jnp.sum(nll)), "count": count, "pass_nll": np.asarray(pass_nll.sum(0))}


@partial(jax.jit, static_argnums=(0, 1))
def _mc_scan(model, samples, state, keys, stream):
  """``mc_test_nll``'s passes, compiled once per model and number of passes (the state,
  keys and stream are arguments, not constants baked into the program): per window, the
  summed ``-log`` mean probability and each pass's summed ``-log p``."""
  carry0 = model.initialize_carry(stream["x"].shape[1])

  def window(carry_S, xs):
    w, batch = xs

    def one(carry, k):
      logits, new = steps.forward(
        model, steps.LANGUAGE_MODEL, state.params, state, batch, train=True,
        key=jax.random.fold_in(k, w), carry=carry,
      )  # fmt: skip
      logp = jax.nn.log_softmax(logits.astype(jnp.float32))
      return jnp.take_along_axis(logp, batch["y"][..., None], -1)[..., 0], new

    logp_S, carry_S = jax.vmap(one)(carry_S, keys)
    logp = jax.nn.logsumexp(logp_S, axis=0) - jnp.log(samples)
    masked = lambda a: jnp.where(batch["mask"], a, 0.0)
    return carry_S, (-jnp.sum(masked(logp)), -jnp.sum(masked(logp_S), axis=(1, 2)))

  carry_S = jax.tree.map(lambda a: jnp.broadcast_to(a, (samples, *a.shape)), carry0)
  windows = jnp.arange(stream["x"].shape[0])
  return jax.lax.scan(window, carry_S, (windows, stream))[1]
