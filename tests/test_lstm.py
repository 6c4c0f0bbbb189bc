"""Numerics of the recurrent core against an independent reference."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from jax.experimental import rnn

from lstmdrop_jax import DropoutConfig, LSTMStack, from_torch_lstm
from lstmdrop_jax.lstm import LSTMLayer

B, T, F, H, L = 3, 11, 5, 7, 2


def stack_vars(sd):
  return {"params": jax.tree.map(jnp.asarray, from_torch_lstm(sd))}


def test_matches_lstm_ref_outputs_and_final_carry(torch_weights):
  sd = torch_weights(layers=L, F=F, H=H)
  x = jax.random.normal(jax.random.key(0), (B, T, F))
  h0 = jax.random.normal(jax.random.key(1), (L, B, H))
  c0 = jax.random.normal(jax.random.key(2), (L, B, H))
  pick = lambda name: {k: jnp.asarray(sd[f"{name}_l{k}"]) for k in range(L)}
  y_ref, h_ref, c_ref = rnn.lstm_ref(
      x, h0, c0, pick("weight_ih"), pick("weight_hh"), pick("bias_ih"), pick("bias_hh"),
      seq_lengths=jnp.full((B,), T, jnp.int32), input_size=F, hidden_size=H, num_layers=L,
      dropout=0.0, bidirectional=False,
  )  # fmt: skip
  stack = LSTMStack(hidden=H, layers=L)
  carry0 = tuple((h0[k], c0[k]) for k in range(L))
  carry, y = stack.apply(stack_vars(sd), x, carry=carry0, return_carry=True)
  np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(jnp.stack([h for h, _ in carry]), h_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(jnp.stack([c for _, c in carry]), c_ref, atol=1e-5, rtol=1e-5)


def test_gradient_matches_finite_differences_in_float64():
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(0), (2, 6, 3), jnp.float64)
    stack = LSTMStack(hidden=4, layers=2, compute_dtype=jnp.float64)
    v = stack.init(jax.random.key(1), x)
    v = jax.tree.map(lambda a: a.astype(jnp.float64), v)

    def loss(v, x):
      carry, y = stack.apply(v, x, return_carry=True)
      return jnp.sum(y**2) + jnp.sum(carry[-1][1])

    jax.test_util.check_grads(loss, (v, x), order=1, modes=["rev"], atol=1e-7, rtol=1e-7)
    # The gradient check above runs in a random direction; also check one
    # parameter coordinate by a central difference.
    p = v["params"]

    def loss_of_kernel(w):
      return loss({"params": {**p, "layer_0": {**p["layer_0"], "kernel_hh": w}}}, x)

    w = p["layer_0"]["kernel_hh"]
    g = jax.grad(loss_of_kernel)(w)[1, 2]
    eps = 1e-6
    fd = (loss_of_kernel(w.at[1, 2].add(eps)) - loss_of_kernel(w.at[1, 2].add(-eps))) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_unroll_1_and_8_agree():
  x = jax.random.normal(jax.random.key(0), (B, 19, F))
  cfg = DropoutConfig(0.2, 0.2, 0.2, recurrent=0.2, weight=0.2)
  s1 = LSTMStack(hidden=H, layers=L, unroll=1, dropout=cfg)
  s8 = s1.clone(unroll=8)
  v = s1.init(jax.random.key(1), x)
  for train in (False, True):
    kw = {"train": train, "rngs": {"dropout": jax.random.key(2)}}
    c1, y1 = s1.apply(v, x, **kw, return_carry=True)
    c8, y8 = s8.apply(v, x, **kw, return_carry=True)
    np.testing.assert_allclose(y1, y8, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(c1[-1][1], c8[-1][1], atol=1e-6, rtol=1e-6)


def test_bf16_compute_close_to_float32():
  x = jax.random.normal(jax.random.key(0), (8, 30, F))
  s32 = LSTMStack(hidden=32, layers=2)
  s16 = s32.clone(compute_dtype=jnp.bfloat16)
  v = s32.init(jax.random.key(1), x)
  y32 = s32.apply(v, x)
  carry16, y16 = s16.apply(v, x, return_carry=True)
  assert y16.dtype == jnp.float32 and carry16[0][1].dtype == jnp.float32
  rel = float(jnp.linalg.norm(y16 - y32) / jnp.linalg.norm(y32))
  assert rel < 1e-2, rel


def test_padded_batch_equals_each_sequence_alone():
  lengths = jnp.array([11, 4, 0, 7])
  x = jax.random.normal(jax.random.key(0), (4, T, F))
  stack = LSTMStack(hidden=H, layers=L)
  v = stack.init(jax.random.key(1), x)
  carry, y = stack.apply(v, x, lengths=lengths, return_carry=True)
  last = stack.apply(v, x, lengths=lengths, return_sequences=False)
  for b, n in enumerate(lengths.tolist()):
    if n == 0:
      np.testing.assert_array_equal(carry[-1][0][b], 0.0)
      continue
    carry_b, y_b = stack.apply(v, x[b : b + 1, :n], return_carry=True)
    np.testing.assert_allclose(y[b, :n], y_b[0], atol=1e-6)
    np.testing.assert_array_equal(y[b, n:], 0.0)
    for (h, c), (h_b, c_b) in zip(carry, carry_b, strict=True):
      np.testing.assert_allclose(h[b], h_b[0], atol=1e-6)
      np.testing.assert_allclose(c[b], c_b[0], atol=1e-6)
    np.testing.assert_allclose(last[b], y_b[0, -1], atol=1e-6)


def test_carry_continues_the_sequence():
  x = jax.random.normal(jax.random.key(0), (B, 12, F))
  stack = LSTMStack(hidden=H, layers=L)
  v = stack.init(jax.random.key(1), x)
  carry, y = stack.apply(v, x, return_carry=True)
  c1, y1 = stack.apply(v, x[:, :5], return_carry=True)
  c2, y2 = stack.apply(v, x[:, 5:], carry=c1, return_carry=True)
  np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y, atol=1e-6)
  np.testing.assert_allclose(c2[-1][1], carry[-1][1], atol=1e-6)


def test_shapes_and_parameter_layout():
  x = jnp.ones((B, T, F))
  stack = LSTMStack(hidden=H, layers=3)
  v = stack.init(jax.random.key(0), x)
  shapes = jax.tree.map(jnp.shape, v["params"])
  assert shapes["layer_0"] == {"kernel_ih": (F, 4 * H), "kernel_hh": (H, 4 * H), "bias": (4 * H,)}
  assert shapes["layer_2"]["kernel_ih"] == (H, 4 * H)
  # The forget-gate block of the bias starts at forget_bias (1.0 by default).
  b = v["params"]["layer_0"]["bias"]
  np.testing.assert_array_equal(b[H : 2 * H], 1.0)
  np.testing.assert_array_equal(b[:H], 0.0)
  carry, y = stack.apply(v, x, return_carry=True)
  assert y.shape == (B, T, H) and len(carry) == 3 and carry[0][0].shape == (B, H)
  last = stack.apply(v, x, return_sequences=False)
  assert last.shape == (B, H)


def test_layer_alone_is_a_flax_module():
  layer = LSTMLayer(hidden=H)
  x_TBF = jnp.ones((T, B, F))
  z = jnp.zeros((B, H))
  v = layer.init(jax.random.key(0), x_TBF, (z, z))
  (h, c), y = layer.apply(v, x_TBF, (z, z), return_carry=True)
  assert y.shape == (T, B, H) and h.shape == c.shape == (B, H)


def test_outputs_alone_by_default_and_the_carry_first_on_request_as_flax_rnn():
  """As ``flax.linen.RNN``: outputs alone, ``(carry, outputs)`` with ``return_carry``
  (the call's argument overrides the attribute); so a stack feeds ``nn.Dense`` directly."""
  import flax.linen as nn

  x = jax.random.normal(jax.random.key(0), (B, T, F))
  stack = LSTMStack(hidden=H, layers=2)
  v = stack.init(jax.random.key(1), x)
  y = stack.apply(v, x)
  carry, y2 = stack.apply(v, x, return_carry=True)
  np.testing.assert_array_equal(y, y2)
  np.testing.assert_array_equal(carry[-1][0], y[:, -1])  # the top layer's last h
  carry3, y3 = stack.clone(return_carry=True).apply(v, x)
  assert len(carry3) == 2
  np.testing.assert_array_equal(y3, y)
  assert isinstance(stack.clone(return_carry=True).apply(v, x, return_carry=False), jax.Array)
  layer_y = LSTMLayer(hidden=H).apply(
    {"params": v["params"]["layer_0"]}, jnp.swapaxes(x, 0, 1), carry[0]
  )
  assert isinstance(layer_y, jax.Array) and layer_y.shape == (T, B, H)

  class Head(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(3)(LSTMStack(hidden=H)(x, return_sequences=False))

  head = Head()
  assert head.apply(head.init(jax.random.key(2), x), x).shape == (B, 3)


@pytest.mark.parametrize(
  ("kwargs", "match"),
  [
    ({"hidden": 0}, "hidden must be a positive int"),
    ({"hidden": 8, "layers": 0}, "layers must be an int >= 1"),
    ({"hidden": 8, "unroll": 0}, "unroll must be an int >= 1"),
    ({"hidden": 8, "dropout": {"output": 0.2}}, "dropout must be a DropoutConfig"),
    ({"hidden": 8, "compute_dtype": jnp.float16}, "compute_dtype must be float32 or bfloat16"),
  ],
)
def test_bad_constructor_arguments(kwargs, match):
  with pytest.raises((ValueError, TypeError), match=match):
    LSTMStack(**kwargs)


def test_wrong_input_rank_rejected():
  stack = LSTMStack(hidden=4)
  with pytest.raises(ValueError, match=r"\[batch, time, features\].*rank 2"):
    stack.init(jax.random.key(0), jnp.ones((3, 10)))


def test_feature_size_other_than_initialised_rejected():
  stack = LSTMStack(hidden=4)
  v = stack.init(jax.random.key(0), jnp.ones((2, 5, 3)))
  with pytest.raises(ValueError, match="initialised for 3 input features but got inputs with 6"):
    stack.apply(v, jnp.ones((2, 5, 6)))


@pytest.mark.parametrize("lengths", [[3, -1], [3, 6]])
def test_bad_lengths_rejected(lengths):
  stack = LSTMStack(hidden=4)
  x = jnp.ones((2, 5, 3))
  v = stack.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=r"lengths must lie in \[0, T\] = \[0, 5\]"):
    stack.apply(v, x, lengths=jnp.array(lengths))


def test_bad_lengths_shape_and_carry_rejected():
  stack = LSTMStack(hidden=4, layers=2)
  x = jnp.ones((2, 5, 3))
  v = stack.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=r"lengths must have shape \[batch\]"):
    stack.apply(v, x, lengths=jnp.array([5, 5, 5]))
  with pytest.raises(ValueError, match=r"carry must be a tuple of 2 \(h, c\) pairs"):
    stack.apply(v, x, carry=stack.initialize_carry(3))
