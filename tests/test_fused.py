"""The hand-written backward pass against autodiff of the same recurrence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstmdrop_jax import DropoutConfig, LSTMStack
from lstmdrop_jax.fused import lstm_recurrence, reference_recurrence

T, B, H = 13, 5, 6


def _inputs(seed=0):
  k = jax.random.split(jax.random.key(seed), 7)
  xw = jax.random.normal(k[0], (T, B, 4 * H))
  w = 0.4 * jax.random.normal(k[1], (H, 4 * H))
  h0, c0 = jax.random.normal(k[2], (B, H)), jax.random.normal(k[3], (B, H))
  valid = jnp.arange(T)[:, None] < jnp.array([13, 7, 0, 1, 10])[None]
  scale = jax.random.bernoulli(k[4], 0.7, (B, H)) / 0.7
  dys = jax.random.normal(k[5], (T, B, H))
  return xw, w, h0, c0, valid, scale, dys


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("recurrent", [False, True, "per_gate"])
def test_values_and_gradients_match_autodiff(masked, recurrent):
  xw, w, h0, c0, valid, scale, dys = _inputs()
  valid = valid if masked else None
  if recurrent == "per_gate":  # a mask per gate: [4, B, H]
    scale = jax.random.bernoulli(jax.random.key(9), 0.7, (4, B, H)) / 0.7
  scale = scale if recurrent else None

  def loss(f, xw, w, h0, c0, scale):
    (h, c), ys = f(xw, w, h0, c0, valid, scale, None, 4)
    return jnp.sum(ys * dys) + jnp.sum(1.3 * h) + jnp.sum(0.7 * c)

  args = (xw, w, h0, c0, scale)
  argnums = (0, 1, 2, 3, 4) if recurrent else (0, 1, 2, 3)
  v1, g1 = jax.value_and_grad(lambda *a: loss(lstm_recurrence, *a), argnums)(*args)
  v2, g2 = jax.value_and_grad(lambda *a: loss(reference_recurrence, *a), argnums)(*args)
  np.testing.assert_allclose(v1, v2, rtol=1e-6)
  for a, b in zip(g1, g2, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_bf16_gradients_close_to_autodiff():
  xw, w, h0, c0, valid, _, dys = _inputs(1)
  w16 = w.astype(jnp.bfloat16)

  def loss(f, xw, w):
    return jnp.sum(f(xw, w, h0, c0, valid, None, None, 1)[1] * dys)

  g1 = jax.grad(lambda *a: loss(lstm_recurrence, *a), (0, 1))(xw, w16)
  g2 = jax.grad(lambda *a: loss(reference_recurrence, *a), (0, 1))(xw, w16)
  assert g1[1].dtype == jnp.bfloat16
  for a, b in zip(g1, g2, strict=True):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert np.linalg.norm(a - b) <= 2e-2 * np.linalg.norm(b)


@pytest.mark.parametrize("per_gate", [False, True])
def test_stack_fused_and_scan_paths_agree_with_dropout(per_gate):
  x = jax.random.normal(jax.random.key(0), (4, 9, 3))
  lengths = jnp.array([9, 3, 6, 1])
  cfg = DropoutConfig(0.2, 0.3, 0.4, recurrent=0.3, weight=0.2, per_gate=per_gate)
  fused = LSTMStack(hidden=5, layers=2, dropout=cfg, unroll=3)
  scan = fused.clone(impl="scan")
  v = fused.init(jax.random.key(1), x)
  rngs = {"dropout": jax.random.key(2)}

  def loss(stack, params):
    carry, y = stack.apply(
      {"params": params}, x, lengths=lengths, train=True, rngs=rngs, return_carry=True
    )
    return jnp.sum(y**2) + jnp.sum(carry[0][1])

  l1, g1 = jax.value_and_grad(lambda p: loss(fused, p))(v["params"])
  l2, g2 = jax.value_and_grad(lambda p: loss(scan, p))(v["params"])
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g1, g2)


def test_per_gate_masks_that_agree_over_the_gates_are_the_shared_mask():
  """The per-gate path (batched over gates) with one mask repeated over the gates computes
  the shared-mask LSTM; with masks that differ by gate, it computes another function."""
  xw, w, h0, c0, valid, scale, dys = _inputs(2)
  repeated = jnp.broadcast_to(scale, (4, B, H))

  def loss(scale, w):
    return jnp.sum(lstm_recurrence(xw, w, h0, c0, valid, scale, None, 1)[1] * dys)

  shared, per_gate = jax.value_and_grad(loss, 1)(scale, w), jax.value_and_grad(loss, 1)(repeated, w)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), shared, per_gate
  )
  other = jax.random.bernoulli(jax.random.key(5), 0.7, (4, B, H)) / 0.7
  assert abs(float(loss(other, w) - shared[0])) > 1e-3


def test_unknown_impl_rejected():
  with pytest.raises(ValueError, match=r"impl must be one of \['fused', 'scan'\]"):
    LSTMStack(hidden=4, impl="cudnn")
