"""Property tests of dropout: masks, scaling, keys, placements."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstmdrop_jax import DropoutConfig, LSTMStack, SequenceClassifier, groups
from lstmdrop_jax import dropout as dr
from tests.helpers import record_masks


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.9])
def test_kept_values_are_scaled_and_dropped_are_zero(rate):
  x = jax.random.normal(jax.random.key(0), (64, 33))
  y = dr.dropout(x, rate, jax.random.key(1), train=True)
  kept = y != 0
  # The rate is a float32 value inside the model, so 1 - rate is too.
  np.testing.assert_array_equal(y[kept], (x / (1 - np.float32(rate)))[kept])
  assert kept.sum() > 0 and (~kept).sum() > 0


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_dropped_fraction_within_binomial_error(rate):
  n = 200_000
  keep = dr.keep_mask(jax.random.key(3), rate, (n,))
  dropped = 1.0 - float(keep.mean())
  sigma = np.sqrt(rate * (1 - rate) / n)
  assert abs(dropped - rate) < 5 * sigma, (dropped, rate, sigma)


def test_rate_zero_and_eval_are_identities():
  x = jax.random.normal(jax.random.key(0), (8, 5))
  np.testing.assert_array_equal(dr.dropout(x, 0.0, jax.random.key(1), train=True), x)
  np.testing.assert_array_equal(dr.dropout(x, 0.5, jax.random.key(1), train=False), x)
  # A traced rate of 0 is an identity too (every unit kept, scale 1).
  y = jax.jit(lambda r: dr.dropout(x, r, jax.random.key(1), train=True))(jnp.float32(0.0))
  np.testing.assert_array_equal(y, x)


def test_model_rate_zero_and_train_false_are_identities():
  x = jax.random.normal(jax.random.key(0), (4, 12, 3))
  off = SequenceClassifier(hidden=8, layers=2)
  on = off.clone(dropout=DropoutConfig(0.3, 0.3, 0.3, recurrent=0.3, weight=0.3))
  v = off.init(jax.random.key(1), x)
  base = off.apply(v, x)
  np.testing.assert_array_equal(on.apply(v, x, train=False), base)
  # train=True with every rate zero needs no key and changes nothing.
  np.testing.assert_array_equal(off.apply(v, x, train=True), base)


def test_time_locked_mask_is_constant_over_time_and_per_step_is_not():
  shape = (50, 6, 7)
  locked = jnp.broadcast_to(dr.sequence_mask(jax.random.key(0), 0.5, shape, True), shape)
  per_step = dr.sequence_mask(jax.random.key(0), 0.5, shape, False)
  assert per_step.shape == shape
  assert bool(jnp.all(locked == locked[:1]))
  assert not bool(jnp.all(per_step == per_step[:1]))


def test_same_key_same_mask_other_key_other_mask():
  a = dr.keep_mask(jax.random.key(7), 0.5, (1000,))
  b = dr.keep_mask(jax.random.key(7), 0.5, (1000,))
  c = dr.keep_mask(jax.random.key(8), 0.5, (1000,))
  np.testing.assert_array_equal(a, b)
  assert not bool(jnp.all(a == c))


def test_placements_and_layers_draw_independent_masks(monkeypatch):
  H, F = 16, 16  # equal sizes so every placement's mask has the same shape
  cfg = DropoutConfig(input=0.5, between=0.5, output=0.5, recurrent=0.5, time_locked=True)
  stack = LSTMStack(hidden=H, layers=3, dropout=cfg)
  x = jnp.ones((32, 5, F))
  v = stack.init(jax.random.key(0), x)
  drawn = record_masks(monkeypatch)
  stack.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
  # input, between x2, output (time-locked [1, B, H]) and recurrent x3 ([B, H]).
  masks = [m.reshape(32, H) for m in drawn]
  assert len(masks) == 7
  for i in range(len(masks)):
    for j in range(i):
      agree = float((masks[i] == masks[j]).mean())
      # Independent p=0.5 masks agree on about half the entries (512 of them).
      assert 0.35 < agree < 0.65, (i, j, agree)


def test_time_locked_switch_per_placement(monkeypatch):
  cfg = DropoutConfig(input=0.5, between=0.5, output=0.5, time_locked=["between"])
  assert cfg.time_locked == ("between",)
  stack = LSTMStack(hidden=4, layers=2, dropout=cfg)
  x = jnp.ones((3, 9, 4))
  v = stack.init(jax.random.key(0), x)
  drawn = record_masks(monkeypatch)
  stack.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
  assert [m.shape for m in drawn] == [(9, 3, 4), (1, 3, 4), (9, 3, 4)]


def test_output_placement_scales_kept_outputs():
  x = jax.random.normal(jax.random.key(0), (8, 6, 3))
  cfg = DropoutConfig(output=0.4)
  stack = LSTMStack(hidden=5, layers=2, dropout=cfg)
  v = stack.init(jax.random.key(1), x)
  y_eval = stack.apply(v, x)
  y_train = stack.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)})
  kept = y_train != 0
  np.testing.assert_array_equal(y_train[kept], (y_eval / (1 - np.float32(0.4)))[kept])
  assert 0.2 < 1 - float(kept.mean()) < 0.6


def test_same_key_same_output_other_key_other_output():
  x = jax.random.normal(jax.random.key(0), (4, 10, 3))
  m = SequenceClassifier(hidden=8, layers=2, dropout=DropoutConfig(0.2, 0.3, 0.4, recurrent=0.2))
  v = m.init(jax.random.key(1), x)
  run = lambda k: m.apply(v, x, train=True, rngs={"dropout": jax.random.key(k)})
  np.testing.assert_array_equal(run(5), run(5))
  assert not np.array_equal(run(5), run(6))


def test_training_without_a_key_fails_clearly():
  x = jnp.ones((2, 4, 3))
  m = SequenceClassifier(hidden=4, dropout=DropoutConfig(output=0.5))
  v = m.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=r"needs a PRNG key.*rngs=\{'dropout': key\}"):
    m.apply(v, x, train=True)


def test_traced_rates_match_concrete_rates_and_compile_once():
  x = jax.random.normal(jax.random.key(0), (4, 7, 3))
  m = SequenceClassifier(hidden=8, layers=2, dropout=DropoutConfig(0.1, 0.2, 0.3))
  v = m.init(jax.random.key(1), x)
  key = jax.random.key(2)

  @jax.jit
  def f(cfg):
    return m.clone(dropout=cfg).apply(v, x, train=True, rngs={"dropout": key})

  want = m.apply(v, x, train=True, rngs={"dropout": key})
  np.testing.assert_array_equal(f(m.dropout.as_arrays()), want)
  f(DropoutConfig(0.5, 0.0, 0.2).as_arrays())
  assert f._cache_size() == 1


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.2"])
def test_rate_outside_unit_interval_rejected(bad):
  with pytest.raises(ValueError, match="dropout rate 'between'"):
    DropoutConfig(between=bad)


def test_unknown_placement_rejected_with_valid_names():
  with pytest.raises(
    ValueError, match=r"valid placements are \['input', 'between', 'output', 'semeniuta'\]"
  ):
    DropoutConfig(output=0.2, time_locked=["outptu"])
  with pytest.raises(ValueError, match=r"valid names are \['input', 'between', 'output'"):
    DropoutConfig.from_placements({"hidden": 0.3})
  assert DropoutConfig.from_placements({"output": 0.3}).output == 0.3


def test_config_is_a_pytree_with_static_time_locking():
  cfg = DropoutConfig(input=0.1, output=0.3, time_locked=True)
  leaves, treedef = jax.tree.flatten(cfg)
  assert leaves == [0.1, 0.0, 0.3] + [0.0] * (len(dr.REGISTRY) - 3)
  back = jax.tree.unflatten(treedef, leaves)
  assert back == cfg and back.time_locked == dr.PLACEMENTS


def test_a_group_differing_in_locking_carries_each_runs_flags_as_leaves():
  per_step = DropoutConfig(input=0.5, output=0.5)
  locked = per_step.replace(time_locked=["output", "semeniuta"])
  assert type(groups.union([per_step, per_step])) is DropoutConfig  # the usual step
  union = groups.union([per_step, locked])
  assert isinstance(union, dr.GroupDropout) and union.time_locked == ()
  assert union.per_run == ("output", "semeniuta")
  member = union.member(locked).as_arrays()
  leaves = jax.tree.leaves(member)
  assert len(leaves) == len(dr.REGISTRY) + 2 and bool(leaves[-2]) and bool(leaves[-1])
  assert not bool(union.member(per_step).is_time_locked("output"))

  # A traced flag draws the locked mask where it is set, the per-step one elsewhere.
  def mask(flag):
    return dr.sequence_mask(jax.random.key(3), 0.5, (6, 4, 8), flag)

  np.testing.assert_array_equal(jax.jit(mask)(True), np.broadcast_to(mask(True), (6, 4, 8)))
  np.testing.assert_array_equal(jax.jit(mask)(False), mask(False))


@pytest.mark.parametrize("locked", [False, True])
def test_per_gate_masks_differ_by_gate_and_a_shared_one_is_the_usual_mask(locked):
  key, shape, T = jax.random.key(4), (5, 64, 32), 1 if locked else 5
  own = dr.gate_mask(key, 0.4, shape, locked, per_gate=True)
  shared = dr.gate_mask(key, 0.4, shape, locked, per_gate=False)
  assert own.shape == shared.shape == (dr.GATES, T, 64, 32)
  # The shared mask is the mask without gates, repeated over them.
  usual = dr.sequence_mask(key, 0.4, shape, locked)
  for k in range(dr.GATES):
    np.testing.assert_array_equal(shared[k], usual)
  # Per gate: each gate its own draw, at the rate.
  for k in range(1, dr.GATES):
    assert 0.2 < float(jnp.mean(own[k] != own[0])) < 0.6  # 2 p (1 - p) = 0.48
  assert abs(float(jnp.mean(own)) - 0.6) < 4 * np.sqrt(0.24 / own.size)
  # A run's traced flag (a group differing in per_gate) draws what the run draws alone.
  flagged = jax.jit(lambda f: dr.gate_mask(key, 0.4, shape, locked, per_gate=f))
  np.testing.assert_array_equal(flagged(True), own)
  np.testing.assert_array_equal(flagged(False), shared)


DRAWS = {  # every kind of mask with a batch axis: draw(key, shape), shape, batch axis
  "per step": (lambda k, s: dr.sequence_mask(k, 0.4, s, False), (5, 8, 3), 1),
  "locked": (lambda k, s: dr.sequence_mask(k, 0.4, s, True), (5, 8, 3), 1),
  "per gate": (lambda k, s: dr.gate_mask(k, 0.4, s, False, per_gate=True), (5, 8, 3), 1),
  "per sequence": (lambda k, s: dr.keep_mask16(k, 0.4, s, batch_axis=0), (8, 6), 0),
  "zoneout": (lambda k, s: dr.zone_mask(k, 0.4, s, batch_axis=1), (5, 8, 6), 1),
}


@pytest.mark.parametrize("kind", DRAWS)
def test_a_block_of_the_batch_draws_its_rows_of_the_whole_batchs_mask(kind):
  """What a device holding a quarter of the batch draws (``batch_shard``, traced
  index): those rows of the mask one device with the whole batch draws."""
  draw, shape, axis = DRAWS[kind]
  key = jax.random.key(9)
  whole = np.asarray(draw(key, shape))
  local = list(shape)
  local[axis] //= 4

  @jax.jit
  def block(index):
    with dr.batch_shard(index, 4):
      return draw(key, tuple(local))

  axis += whole.ndim - len(shape)  # the gate axis comes first
  rows = np.concatenate([block(i) for i in range(4)], axis=axis)
  np.testing.assert_array_equal(rows, whole)
  assert 0 < whole.mean() < 1


def test_a_group_differing_in_per_gate_carries_each_runs_flag_as_a_leaf():
  shared = DropoutConfig(input=0.5, recurrent=0.2)
  gated = shared.replace(per_gate=True)
  assert groups.union([gated, gated]) == gated
  union = groups.union([shared, gated])
  assert isinstance(union, dr.GroupDropout) and union.per_gate and union.per_run == ()
  leaves = jax.tree.leaves(union.member(gated).as_arrays())
  assert len(leaves) == len(dr.REGISTRY) + 1 and bool(leaves[-1])
  assert union.member(shared).is_per_gate() is False
  assert union.with_rates_of(union.member(gated)).is_per_gate() is True
  with pytest.raises(ValueError, match="per_gate must be True or False"):
    DropoutConfig(input=0.5, per_gate="yes")
