"""Schedules and optimisers: Zaremba's table, cosine and warm-up, clipping, plateaus."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lstmdrop_jax import optim
from lstmdrop_jax.config import Config
from tests.helpers import PTB_DIR

# Zaremba et al.'s learning rate by epoch, written out from their table:
# small: halved each epoch after epoch 4 (13 epochs); medium: divided by 1.2
# after epoch 6 (39); large: divided by 1.15 after epoch 14 (55).
ZAREMBA_LR = {
  "small": [1.0] * 4 + [0.5**k for k in range(1, 10)],
  "medium": [1.0] * 6 + [1.2**-k for k in range(1, 34)],
  "large": [1.0] * 14 + [1.15**-k for k in range(1, 42)],
}


@pytest.mark.parametrize("name", ["small", "medium", "large"])
def test_schedule_reproduces_zaremba_table(name):
  import experiments.ptb_zaremba as exp

  cfg = exp.zaremba(name, str(PTB_DIR))
  want = ZAREMBA_LR[name]
  assert cfg.epochs == len(want)
  got = [
    optim.lr_at_epoch(cfg.learning_rate, e, cfg.lr_decay, cfg.decay_after)
    for e in range(1, cfg.epochs + 1)
  ]
  np.testing.assert_allclose(got, want, rtol=1e-12)
  # The optax schedule gives the same rate at every step of each epoch.
  spe = 7
  sched = optim.epoch_decay_schedule(cfg.learning_rate, spe, cfg.lr_decay, cfg.decay_after)
  per_step = np.asarray(jax.vmap(sched)(jnp.arange(spe * cfg.epochs)))
  np.testing.assert_allclose(per_step, np.repeat(want, spe), rtol=1e-5)  # float32


def test_optimizer_clips_by_global_norm_and_rejects_unknown_names():
  tx = optim.make_optimizer("sgd", 1.0, clip_norm=0.5)
  params = {"w": jnp.zeros(4)}
  updates, _ = tx.update({"w": jnp.full(4, 10.0)}, tx.init(params), params)
  np.testing.assert_allclose(optax.tree.norm(updates), 0.5, rtol=1e-6)
  with pytest.raises(
    ValueError, match=r"unknown optimizer 'adagrad'; valid names are \['adam', 'sgd'\]"
  ):
    optim.make_optimizer("adagrad", 1.0)


def test_global_norm_and_its_clipping_equal_optaxs():
  k = iter(jax.random.split(jax.random.key(0), 4))
  tree = {
    "scalar": jnp.float32(-3.0),
    "bias": jax.random.normal(next(k), (50,)),
    "kernel": jax.random.normal(next(k), (40, 300)),
    "stacked": jax.random.normal(next(k), (3, 5, 70)),
  }
  np.testing.assert_allclose(optim.global_norm(tree), optax.tree.norm(tree), rtol=1e-6)
  runs = jax.random.normal(next(k), (4, 6, 9)) * jnp.arange(1.0, 5.0)[:, None, None]
  np.testing.assert_allclose(
    jax.vmap(optim.global_norm)(runs), jax.vmap(optax.tree.norm)(runs), rtol=1e-6
  )
  norm = float(optax.tree.norm(tree))
  for max_norm in (norm / 3, 2 * norm):  # clipped, then left alone
    ours, _ = optim.clip_by_global_norm(max_norm).update(tree, optax.EmptyState())
    theirs, _ = optax.clip_by_global_norm(max_norm).update(tree, optax.EmptyState())
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, theirs)


def test_cosine_schedules_reach_zero_at_the_end_and_warm_up_linearly():
  base = Config(learning_rate=0.1, epochs=10)
  spe = 4
  cosine = optim.schedule_of(dataclasses.replace(base, schedule="cosine"), spe)
  np.testing.assert_allclose([cosine(0), cosine(20), cosine(40)], [0.1, 0.05, 0.0], atol=1e-7)
  warm = dataclasses.replace(base, schedule="warmup_cosine", warmup_epochs=2)
  sched = optim.schedule_of(warm, spe)
  np.testing.assert_allclose(
    [sched(0), sched(4), sched(8), sched(40)], [0.0, 0.05, 0.1, 0.0], atol=1e-7
  )
  # The log's learning rate is the schedule's at the epoch's first step.
  assert optim.lr_of_epoch(warm, 2, spe) == pytest.approx(0.05)
  assert optim.lr_of_epoch(dataclasses.replace(base, schedule="constant"), 7, spe) == 0.1


def _plateau_scales(losses, lr_decay, patience):
  """The scale after each evaluation, by the rule written out: divide by ``lr_decay``
  after ``patience`` evaluations in a row not below (1 - 1e-4) times the best."""
  best, bad, scale, out = np.inf, 0, 1.0, []
  for v in losses:
    if v < (1 - 1e-4) * best:
      best, bad = v, 0
    else:
      bad += 1
      if bad == patience:
        scale, bad = scale / lr_decay, 0
    out.append(scale)
  return out


@pytest.mark.parametrize("patience", [1, 2])
def test_plateau_divides_the_rate_after_evaluations_without_improvement(patience):
  params = {"w": jnp.ones(3)}
  tx = optim.make_optimizer("sgd", 0.5, clip_norm=10.0, plateau=(4.0, patience))
  state = tx.init(params)
  losses = [3.0, 2.0, 2.5, 1.9, 1.95, 1.95, 1.8999, 1.0, 1.2, 1.3, 1.4]
  want = _plateau_scales(losses, 4.0, patience)
  grads = {"w": jnp.array([1.0, -2.0, 0.5])}
  for v, scale in zip(losses, want, strict=True):
    state = optim.observe_plateau(state, jnp.float32(v), 4.0, patience)
    assert float(optim.lr_scale(state)) == pytest.approx(scale)
    # A training step applies the scale and leaves the plateau's count alone.
    updates, after = tx.update(grads, state, params)
    np.testing.assert_allclose(updates["w"], -0.5 * scale * grads["w"], rtol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, after, state)
  assert want[-1] < 1.0  # the sequence exercises the division
  assert float(optim.lr_scale(optax.sgd(0.1).init(params))) == 1.0  # no plateau: 1
