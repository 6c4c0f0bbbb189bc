"""Learning-rate schedules and optimisers (optax).

Schedules (``Config.schedule``):

* ``"constant"``: the learning rate throughout.
* ``"step"``: divided by ``lr_decay`` once per epoch after ``decay_after``
  epochs (Zaremba et al.); with ``lr_decay == 1`` (the default) constant.
* ``"cosine"``: cosine decay from the learning rate to 0 over the run's
  steps (``optax.cosine_decay_schedule``).
* ``"warmup_cosine"``: linear warm-up from 0 over ``warmup_epochs``, then
  cosine decay to 0 (``optax.warmup_cosine_decay_schedule``).
* ``"plateau"``: the learning rate, divided by ``lr_decay`` whenever
  ``plateau_patience`` evaluations in a row bring no better validation loss
  (PyTorch's word-language-model example divides by 4 after every such
  evaluation). The decision is ``optax.contrib.reduce_on_plateau``'s; its
  state lives in the optimiser state (``scale_on_plateau``), so a resumed run
  continues with the rate it had. The loop feeds it each validation loss
  (``observe_plateau``); the training steps only apply its scale.

``constant``, ``step`` and ``plateau`` depend on the epochs trained so far,
so a run can be extended to more epochs and equal the longer run; the cosine schedules span
the run's epochs, so changing ``epochs`` would change the rate of epochs
already trained (``ENDS_AT_LAST_EPOCH``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from lstmdrop_jax import platform

SCHEDULES = ("constant", "step", "cosine", "warmup_cosine", "plateau")
#: Schedules that divide the rate by ``lr_decay``.
DECAYING = ("step", "plateau")
#: Schedules whose shape depends on the number of epochs.
ENDS_AT_LAST_EPOCH = ("cosine", "warmup_cosine")


def lr_at_epoch(learning_rate: float, epoch: int, lr_decay: float, decay_after: int) -> float:
  """Learning rate of 1-based ``epoch``: divided by ``lr_decay`` once per epoch after
  ``decay_after`` epochs (Zaremba et al.: ``lr / decay ** max(epoch - decay_after, 0)``)."""
  return learning_rate / lr_decay ** max(epoch - decay_after, 0)


def epoch_decay_schedule(
  learning_rate: float, steps_per_epoch: int, lr_decay: float = 1.0, decay_after: int = 0
) -> optax.Schedule:
  """``lr_at_epoch`` as an optax schedule over steps (constant when ``lr_decay == 1``)."""

  def schedule(step):
    epoch = step // steps_per_epoch + 1
    return learning_rate / lr_decay ** jnp.maximum(epoch - decay_after, 0).astype(jnp.float32)

  return schedule


def make_schedule(
  name: str,
  learning_rate: float,
  *,
  steps_per_epoch: int,
  epochs: int,
  lr_decay: float = 1.0,
  decay_after: int = 0,
  warmup_epochs: int = 0,
) -> optax.Schedule:
  """The schedule ``name`` (see the module doc) over ``epochs * steps_per_epoch`` steps."""
  if name in ("constant", "plateau"):  # plateau: the scale is scale_on_plateau's
    return optax.constant_schedule(learning_rate)
  if name == "step":
    return epoch_decay_schedule(learning_rate, steps_per_epoch, lr_decay, decay_after)
  total = epochs * steps_per_epoch
  if name == "cosine":
    return optax.cosine_decay_schedule(learning_rate, decay_steps=total)
  if name == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, warmup_steps=warmup_epochs * steps_per_epoch, decay_steps=total
    )
  raise ValueError(f"unknown schedule {name!r}; valid ones are {list(SCHEDULES)}")


def schedule_of(config: Any, steps_per_epoch: int) -> optax.Schedule:
  """The schedule a ``Config`` describes."""
  return make_schedule(
    config.schedule,
    config.learning_rate,
    steps_per_epoch=steps_per_epoch,
    epochs=config.epochs,
    lr_decay=config.lr_decay,
    decay_after=config.decay_after,
    warmup_epochs=config.warmup_epochs,
  )


def lr_of_epoch(config: Any, epoch: int, steps_per_epoch: int, scale: float = 1.0) -> float:
  """The learning rate at the first step of 1-based ``epoch`` (for the log); ``scale``:
  the plateau scale the epoch trained with (``lr_scale``)."""
  if config.schedule == "step":  # exact, in Python floats
    return lr_at_epoch(config.learning_rate, epoch, config.lr_decay, config.decay_after)
  if config.schedule in ("constant", "plateau"):
    return config.learning_rate * scale
  return float(schedule_of(config, steps_per_epoch)((epoch - 1) * steps_per_epoch))


def global_norm(tree: Any) -> jax.Array:
  """The L2 norm of all of ``tree``'s leaves, as ``optax.tree.norm``, each leaf's squares
  summed by rows (``platform.sum_of_squares``)."""
  return jnp.sqrt(sum(platform.sum_of_squares(x) for x in jax.tree.leaves(tree)))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  """``optax.clip_by_global_norm`` with the norm of ``global_norm``: updates whose
  global norm exceeds ``max_norm`` are scaled down to it."""

  def update(updates, state, params=None):
    del params
    norm = global_norm(updates)
    under = norm < max_norm
    clipped = jax.tree.map(
      lambda u: jnp.where(under, u, (u / norm.astype(u.dtype)) * max_norm), updates
    )
    return clipped, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _plateau(lr_decay: float, patience: int) -> optax.GradientTransformationExtraArgs:
  # An evaluation improves on the best when its loss is below (1 - 1e-4) times it
  # (optax's default tolerance, and PyTorch's ReduceLROnPlateau's).
  return optax.contrib.reduce_on_plateau(factor=1.0 / lr_decay, patience=patience, rtol=1e-4)


def scale_on_plateau(lr_decay: float, patience: int = 1) -> optax.GradientTransformation:
  """Scales updates by ``optax.contrib.reduce_on_plateau``'s scale, which changes only
  when ``observe_plateau`` feeds it a validation loss: divided by ``lr_decay`` after
  ``patience`` evaluations in a row without a better one."""
  inner = _plateau(lr_decay, patience)

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates), state

  return optax.GradientTransformation(inner.init, update)


def _is_plateau(x: Any) -> bool:
  return isinstance(x, optax.contrib.ReduceLROnPlateauState)


def observe_plateau(opt_state: Any, value: jax.Array, lr_decay: float, patience: int = 1) -> Any:
  """``opt_state`` after an evaluation whose validation loss is ``value``: the
  ``scale_on_plateau`` states in it updated (the rest unchanged)."""
  inner = _plateau(lr_decay, patience)
  observe = lambda s: inner.update({}, s, value=value)[1] if _is_plateau(s) else s
  return jax.tree.map(observe, opt_state, is_leaf=_is_plateau)


def lr_scale(opt_state: Any) -> jax.Array:
  """The product of the plateau scales in ``opt_state`` (1 without one)."""
  scales = [s.scale for s in jax.tree.leaves(opt_state, is_leaf=_is_plateau) if _is_plateau(s)]
  return jnp.prod(jnp.stack(scales)) if scales else jnp.ones((), jnp.float32)


def make_optimizer(
  name: str,
  learning_rate: float | optax.Schedule,
  *,
  clip_norm: float | None = None,
  weight_decay: float = 0.0,
  momentum: float = 0.0,
  plateau: tuple[float, int] | None = None,
) -> optax.GradientTransformation:
  """Adam or SGD with a learning rate (or schedule) and global-norm clipping.

  Args:
    name: ``"adam"`` or ``"sgd"``.
    learning_rate: a float or an optax schedule over steps.
    clip_norm: clip gradients to this global norm (None: no clipping).
    weight_decay: decoupled weight decay (AdamW for adam; added to the
      gradient for SGD).
    momentum: SGD momentum.
    plateau: ``(lr_decay, patience)``: the updates scaled by ``scale_on_plateau``.
  """
  if name == "adam" and weight_decay:
    opt = optax.adamw(learning_rate, weight_decay=weight_decay)
  elif name == "adam":
    opt = optax.adam(learning_rate)
  elif name == "sgd":
    opt = optax.chain(
      optax.add_decayed_weights(weight_decay) if weight_decay else optax.identity(),
      optax.sgd(learning_rate, momentum=momentum or None),
    )
  else:
    raise ValueError(f"unknown optimizer {name!r}; valid names are ['adam', 'sgd']")
  if plateau is not None:
    opt = optax.chain(opt, scale_on_plateau(*plateau))
  if clip_norm is None:
    return opt
  return optax.chain(clip_by_global_norm(clip_norm), opt)


def optimizer_of(config: Any, steps_per_epoch: int) -> optax.GradientTransformation:
  """The optimiser a ``Config`` describes, with its schedule."""
  return make_optimizer(
    config.optimizer,
    schedule_of(config, steps_per_epoch),
    clip_norm=config.clip_norm,
    weight_decay=config.weight_decay,
    plateau=plateau_of(config),
  )


def plateau_of(config: Any) -> tuple[float, int] | None:
  """``(lr_decay, plateau_patience)`` of a ``Config`` with schedule ``plateau``, else None."""
  if config.schedule != "plateau":
    return None
  return config.lr_decay, config.plateau_patience
