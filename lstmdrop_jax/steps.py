"""Pure training and evaluation steps, and the objectives that score a batch.

``train_step(state, batch, key) -> (state, metrics)`` is a pure function of
its arguments: the dropout key of a step is ``fold_in(key, state.step)``, so
nothing random lives outside the state and a resumed run draws the masks the
uninterrupted run would have drawn. Dropout rates live in the state as
traced scalars, so one compiled step serves every rate (and ``vmap`` over
states trains K runs with different seeds or rates at once).

Metrics are sums (loss sum, correct count, example or token count) kept on
device; the caller adds them up and fetches them once per logging interval.

Batches: a classification batch is ``{'x': [B, T, F], 'y': [B], 'mask': [B]}``
plus ``'lengths': [B]`` for variable-length data; a language-model batch is
``{'x': [B, T], 'y': [B, T]}`` token ids, the model's carry living in
``state.carry`` across consecutive batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from lstmdrop_jax import masks, platform
from lstmdrop_jax.losses import classification_metrics, lm_metrics
from lstmdrop_jax.optim import global_norm
from lstmdrop_jax.placements import DropoutConfig

Array = jax.Array
Batch = dict[str, Array]
Metrics = dict[str, Array]


@flax.struct.dataclass
class TrainState:
  """Everything a training run updates.

  Attributes:
    step: int32 scalar, number of updates so far.
    params: the model's ``variables['params']``.
    opt_state: the optax state.
    dropout: the run's ``DropoutConfig`` with JAX scalar rates.
    carry: the language model's carry across batches (``None`` for
      classifiers); reset to zeros at the start of each epoch.
  """

  step: Array
  params: Any
  opt_state: Any
  dropout: DropoutConfig
  carry: Any = None


def create_train_state(
  model: nn.Module,
  tx: optax.GradientTransformation,
  key: Array,
  sample_x: Array,
  objective: Objective,
) -> TrainState:
  """Initialises parameters from ``key``, the optimiser state and the carry."""
  params = model.init(key, sample_x)["params"]
  carry = objective.init_carry(model, sample_x.shape[0])
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    dropout=model.dropout.as_arrays(),
    carry=carry,
  )


# --- objectives: how a model is called on a batch and scored ----------------


@dataclasses.dataclass(frozen=True)
class Objective:
  """How a kind of model is called on a batch and scored.

  The steps below are written once against this; ``tasks.py`` picks the
  objective of each task.

  Attributes:
    name: for messages.
    apply: ``apply(model, variables, batch, carry, train, rngs) -> (logits, carry)``;
      the carry is None for models without state across batches.
    metrics: ``metrics(logits, batch) -> Metrics``, sums (``loss_sum``,
      ``count``, ...).
    denominator: ``denominator(metrics, batch_size)``: the optimiser minimises
      ``metrics['loss_sum'] / denominator``. With the batch split over
      devices, ``metrics`` and ``batch_size`` are the whole batch's, and each
      device's share of the loss is its own ``loss_sum`` over that.
    init_carry: ``init_carry(model, batch_size)``: the state carried across
      batches at the start of an epoch (None: no state).
    train_metrics: ``train_metrics(model, variables, batch, carry, rngs) ->
      (metrics, carry)``, what the training step differentiates; None: ``apply``
      (``train=True``), then ``metrics``.
  """

  name: str
  apply: Callable[..., tuple[Array, Any]]
  metrics: Callable[[Array, Batch], Metrics]
  denominator: Callable[[Metrics, int], Array]
  init_carry: Callable[[nn.Module, int], Any]
  train_metrics: Callable[..., tuple[Metrics, Any]] | None = None


def _apply_classifier(model, variables, batch, carry, train, rngs):
  logits = model.apply(variables, batch["x"], lengths=batch.get("lengths"), train=train, rngs=rngs)
  return logits, None


def _apply_language_model(model, variables, batch, carry, train, rngs):
  return model.apply(variables, batch["x"], carry=carry, train=train, rngs=rngs)


def _train_metrics_language_model(model, variables, batch, carry, rngs):
  """With ``head_block_rows`` set, the model scores its targets itself, in blocks of rows
  (``losses.softmax_xent_sum``); otherwise the logits, then ``lm_metrics``."""
  if model.head_block_rows is None:
    logits, carry = _apply_language_model(model, variables, batch, carry, True, rngs)
    return lm_metrics(logits, batch["y"], batch.get("mask")), carry
  mask = batch.get("mask")
  weights = jnp.ones(batch["y"].shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
  loss_sum, carry = model.apply(
    variables, batch["x"], carry=carry, train=True, rngs=rngs, targets_BT=batch["y"],
    weights_BT=weights,
  )  # fmt: skip
  return {"loss_sum": loss_sum, "count": jnp.sum(weights)}, carry


#: ``SequenceClassifier``: batches ``{'x', 'y', 'mask'[, 'lengths']}``; the
#: loss is the mean over the batch's valid examples.
CLASSIFIER = Objective(
  name="classifier",
  apply=_apply_classifier,
  metrics=lambda logits, batch: classification_metrics(logits, batch["y"], batch["mask"]),
  denominator=lambda m, batch_size: jnp.maximum(m["count"], 1.0),
  init_carry=lambda model, batch_size: None,
)

#: ``LanguageModel``: batches ``{'x', 'y'[, 'mask']}`` of token ids. The loss
#: is Zaremba et al.'s: the sum over the unrolled steps of the batch-mean NLL
#: (so their learning rate and clipping threshold apply unchanged).
LANGUAGE_MODEL = Objective(
  name="language model",
  apply=_apply_language_model,
  metrics=lambda logits, batch: lm_metrics(logits, batch["y"], batch.get("mask")),
  denominator=lambda m, batch_size: batch_size,
  init_carry=lambda model, batch_size: model.initialize_carry(batch_size),
  train_metrics=_train_metrics_language_model,
)


def forward(model, objective, params, state, batch, *, train, key=None, carry=None):
  """Logits and the new carry, with the run's dropout rates from the state.

  The model's own ``dropout`` says which placements the step has (its
  non-zero rates); the state's rates are their values, traced, so one
  compiled step serves every rate. A placement the model does not use is a
  concrete zero and compiles to nothing.
  """
  rngs = None if key is None else {"dropout": key}
  return objective.apply(_with_rates(model, state), {"params": params}, batch, carry, train, rngs)


def _with_rates(model: nn.Module, state: TrainState) -> nn.Module:
  """``model`` with the state's (traced) dropout rates."""
  return model.clone(dropout=model.dropout.with_rates_of(state.dropout))


def make_train_step(
  model: nn.Module,
  tx: optax.GradientTransformation,
  objective: Objective,
  *,
  batch_axis: str | None = None,
) -> Callable[[TrainState, Batch, Array], tuple[TrainState, Metrics]]:
  """Builds the pure ``train_step(state, batch, key) -> (state, metrics)``.

  ``key`` is the run's dropout key; the step's key is ``fold_in(key,
  state.step)``. The loss is ``objective``'s (``Objective.denominator``).
  ``model.dropout`` says which placements exist (for runs trained together,
  ``groups.union`` of theirs); ``state.dropout`` holds each run's
  rates. The step is not jitted here: jit it (with ``donate_argnums=0``),
  vmap it, or scan it over an epoch.

  ``batch_axis``: for a step run on each device's rows of the batch
  (``shard_map``), the mesh axis the rows are split over. Each device then
  draws its rows of the whole batch's masks (``dropout.batch_shard``), the
  metrics and gradients are summed over the devices, and every device applies
  the update one device with the whole batch would: the same step, rounded
  differently.
  """

  def loss_fn(params, state, batch, key):
    if objective.train_metrics is None:
      logits, carry = forward(
        model, objective, params, state, batch, train=True, key=key, carry=state.carry
      )
      m = objective.metrics(logits, batch)
    else:
      variables, rngs = {"params": params}, {"dropout": key}
      m, carry = objective.train_metrics(_with_rates(model, state), variables, batch,
                                         state.carry, rngs)  # fmt: skip
    total = jax.lax.stop_gradient(m)  # the scale, not a function of the parameters
    batch_size = batch["y"].shape[0]
    if batch_axis is not None:
      total = jax.lax.psum(total, batch_axis)
      batch_size *= jax.lax.axis_size(batch_axis)
    return m["loss_sum"] / objective.denominator(total, batch_size), (total, carry)

  def train_step(state: TrainState, batch: Batch, key: Array):
    step_key = jax.random.fold_in(key, state.step)
    with _rows_of_batch(batch_axis):
      grads, (metrics, carry) = jax.grad(loss_fn, has_aux=True)(
        state.params, state, batch, step_key
      )
    if batch_axis is not None:
      grads = jax.lax.psum(grads, batch_axis)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm=global_norm(grads))
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      carry=jax.lax.stop_gradient(carry),
    )
    return new_state, metrics

  return train_step


@contextlib.contextmanager
def _rows_of_batch(batch_axis: str | None) -> Iterator[None]:
  """Traces a step on this device's block of the batch split over ``batch_axis``: its
  rows of the global masks, and matmuls free to merge time and batch (the local batch
  is whole on its device)."""
  if batch_axis is None:
    yield
    return
  index, count = jax.lax.axis_index(batch_axis), jax.lax.axis_size(batch_axis)
  with masks.batch_shard(index, count), platform.batch_split_over_devices(False):
    yield


def sharded_state_spec(has_carry: bool, carry_spec: P) -> TrainState:
  """``shard_map``'s spec of a train state for a step with ``batch_axis``: all of
  it replicated but a language model's carry, split as the batch (``carry_spec``)."""
  rep = P()
  return TrainState(rep, rep, rep, rep, carry_spec if has_carry else None)


def make_eval_step(
  model: nn.Module, objective: Objective
) -> Callable[[TrainState, Batch, Any], tuple[Metrics, Any]]:
  """Builds ``eval_step(state, batch, carry=None) -> (metrics, carry)``, no dropout.

  ``carry`` continues a language model's streams from the previous batch
  (None for classifiers, or zeros to start).
  """

  def eval_step(state: TrainState, batch: Batch, carry: Any = None) -> tuple[Metrics, Any]:
    logits, carry = forward(model, objective, state.params, state, batch, train=False, carry=carry)
    return objective.metrics(logits, batch), carry

  return eval_step


def make_train_epoch(
  step: Callable[[TrainState, Batch, Array], tuple[TrainState, Metrics]],
) -> Callable[[TrainState, Batch, Array], tuple[TrainState, Metrics]]:
  """Builds ``train_epoch(state, batches, key) -> (state, metrics)`` from a
  ``train_step`` (``make_train_step``).

  One compiled call per epoch: ``step`` scanned over the leading axis of
  ``batches`` (``[steps, B, ...]``), starting from a zero carry (a language
  model's hidden state is reset at the start of each epoch). The metrics are
  summed over the steps, plus ``finite``: whether the loss and the new
  parameters are finite.
  """

  def train_epoch(state: TrainState, batches: Batch, key: Array):
    state = state.replace(carry=jax.tree.map(jnp.zeros_like, state.carry))
    new, per_step = jax.lax.scan(lambda s, b: step(s, b, key), state, batches)
    metrics = jax.tree.map(lambda a: jnp.sum(a, 0), per_step)
    finite_params = jnp.isfinite(global_norm(new.params))
    metrics["finite"] = finite_params & jnp.isfinite(metrics["loss_sum"])
    return new, metrics

  return train_epoch


def make_evaluate(model: nn.Module, objective: Objective) -> Callable[[TrainState, Batch], Metrics]:
  """Builds ``evaluate(state, batches) -> metrics`` over a whole split in one call.

  ``eval_step`` scanned over ``[n, B, ...]`` batches, the metrics summed; a
  language model's carry runs on from batch to batch, starting from zeros.
  """
  eval_step = make_eval_step(model, objective)

  def evaluate(state: TrainState, batches: Batch) -> Metrics:
    first = jax.tree.map(lambda a: a[0], batches)
    carry0 = objective.init_carry(model, first["x"].shape[0])
    shapes = jax.eval_shape(lambda s, b: eval_step(s, b, carry0)[0], state, first)

    def body(acc, batch):
      carry, total = acc
      m, carry = eval_step(state, batch, carry)
      return (carry, add_metrics(total, m)), None

    zero = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
    (_, total), _ = jax.lax.scan(body, (carry0, zero), batches)
    return total

  return evaluate


def _check_mc(model: nn.Module, samples: int) -> None:
  if getattr(model, "num_classes", None) is None:
    raise ValueError("Monte-Carlo evaluation is implemented for classifiers only")
  if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
    raise ValueError(f"Monte-Carlo samples must be an int >= 1, got {samples!r}")


def mc_probabilities(
  model: nn.Module, state: TrainState, batch: Batch, key: Array, samples: int
) -> Array:
  """Class probabilities of ``samples`` stochastic passes (dropout on), ``[S, B(, K)]``.

  ``[S, B]`` holds ``P(class 1)`` for a binary classifier (one logit), else
  ``[S, B, K]`` softmax probabilities. One key per pass, vmapped.
  """
  _check_mc(model, samples)

  def probs(k):
    logits, _ = forward(model, CLASSIFIER, state.params, state, batch, train=True, key=k)
    return jax.nn.sigmoid(logits) if logits.ndim == 1 else jax.nn.softmax(logits)

  return jax.vmap(probs)(jax.random.split(key, samples))


def make_mc_eval_step(model: nn.Module, samples: int) -> Callable[..., Metrics]:
  """Monte-Carlo dropout: ``mc_eval_step(state, batch, key) -> metrics``.

  Runs ``samples`` stochastic forward passes (``mc_probabilities``) and
  scores the mean predicted probability. For classifiers only.
  """
  _check_mc(model, samples)

  def mc_eval_step(state: TrainState, batch: Batch, key: Array) -> Metrics:
    p = jnp.mean(mc_probabilities(model, state, batch, key, samples), axis=0)
    y, w = batch["y"], batch["mask"].astype(jnp.float32)
    eps = 1e-7
    if p.ndim == 1:
      nll = -(y * jnp.log(p + eps) + (1 - y) * jnp.log(1 - p + eps))
      pred = (p > 0.5).astype(y.dtype)
    else:
      nll = -jnp.log(jnp.take_along_axis(p, y[:, None], 1)[:, 0] + eps)
      pred = jnp.argmax(p, -1).astype(y.dtype)
    return {
      "loss_sum": jnp.sum(nll * w),
      "correct": jnp.sum((pred == y) * w),
      "count": jnp.sum(w),
    }

  return mc_eval_step


def add_metrics(a: Metrics | None, b: Metrics) -> Metrics:
  """Sums two metric dicts on device (``a`` may be None)."""
  return b if a is None else jax.tree.map(jnp.add, a, b)
