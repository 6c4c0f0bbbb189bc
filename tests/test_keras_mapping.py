"""docs/keras.md's mapping, checked the way a user can check it: which entries of a
gradient are exactly zero. A dropped input feature gives a zero gradient to its input;
with one sequence (B = 1) a time-locked mask zeroes whole rows of the next kernel's
gradient, one per dropped unit, and a per-gate mask zeroes other rows in each of the four
gate blocks (i, f, g, o) of ``[in, 4H]``."""

import jax
import jax.numpy as jnp
import numpy as np

from lstmdrop_jax import DropoutConfig, LSTMStack, SequenceClassifier

P, H, F, T = 0.5, 16, 12, 10


def _grads(model, x, key=1):
  """Gradients of the summed outputs with respect to the parameters and the input."""
  variables = model.init(jax.random.key(0), x)

  def loss(params, x):
    out = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(key)})
    return jnp.sum(out)

  return jax.grad(loss, argnums=(0, 1))(variables["params"], x)


def _x(batch=1):
  return jax.random.normal(jax.random.key(3), (batch, T, F)) + 2.0


def _zero_rows_by_gate(kernel_grad):
  """``[4, rows]``: which rows of each gate block of an ``[in, 4H]`` gradient are zero."""
  g = np.asarray(kernel_grad).reshape(kernel_grad.shape[0], 4, H)
  return (g == 0).all(axis=2).T


def _stack(**dropout):
  return LSTMStack(hidden=H, layers=2, dropout=DropoutConfig(**dropout))


def test_a_dropout_layer_before_the_lstm_is_input_with_a_mask_per_step():
  """``Dropout(p)`` on a sequence: a fresh mask per step and feature."""
  _, dx = _grads(_stack(input=P), _x(batch=4))
  zero = np.asarray(dx) == 0
  assert 0.3 < zero.mean() < 0.7
  assert not all((zero[:, t] == zero[:, 0]).all() for t in range(T))  # changes over time


def test_spatial_dropout_1d_is_input_time_locked():
  """``SpatialDropout1D(p)``: a channel is dropped at every step of its sequence."""
  _, dx = _grads(_stack(input=P, time_locked=True), _x(batch=4))
  zero = np.asarray(dx) == 0
  assert 0.2 < zero.mean() < 0.8
  assert all((zero[:, t] == zero[:, 0]).all() for t in range(T))  # the same at every step
  assert not (zero[0] == zero[1]).all()  # another mask for another sequence


def test_a_dropout_layer_between_lstms_is_between_with_a_mask_per_step():
  """A unit of layer 0 dropped at some steps only: no row of layer 1's input-kernel
  gradient is zero, while a time-locked mask zeroes about half of them."""
  per_step, _ = _grads(_stack(between=P), _x())
  locked, _ = _grads(_stack(between=P, time_locked=True), _x())
  assert not _zero_rows_by_gate(per_step["layer_1"]["kernel_ih"]).any()
  assert _zero_rows_by_gate(locked["layer_1"]["kernel_ih"]).any()


def test_lstm_dropout_is_input_and_between_time_locked_and_shared_by_the_gates():
  """``LSTM(dropout=p)`` in a stack: one mask per sequence on each layer's input, the
  same for the four gates."""
  g, _ = _grads(_stack(input=P, between=P, time_locked=True), _x())
  for layer in ("layer_0", "layer_1"):
    rows = _zero_rows_by_gate(g[layer]["kernel_ih"])
    assert rows[0].any() and not rows[0].all()
    assert (rows == rows[0]).all()  # every gate block loses the same rows


def test_lstm_recurrent_dropout_is_recurrent_with_a_mask_per_gate():
  """``LSTM(recurrent_dropout=q)``: one mask per sequence on ``h_{t-1}`` for each gate."""
  config = dict(input=P, between=P, recurrent=P, time_locked=True)
  per_gate, _ = _grads(_stack(**config, per_gate=True), _x())
  shared, _ = _grads(_stack(**config), _x())
  for layer in ("layer_0", "layer_1"):
    rows = _zero_rows_by_gate(per_gate[layer]["kernel_hh"])
    assert rows.any(axis=1).all()  # every gate block has dropped units
    assert not (rows == rows[0]).all()  # not the same ones
    one = _zero_rows_by_gate(shared[layer]["kernel_hh"])
    assert one[0].any() and (one == one[0]).all()


def test_a_dropout_layer_after_the_last_lstm_is_output():
  """``LSTM(return_sequences=False) -> Dropout(p) -> Dense``: the head's kernel gets a zero
  gradient from each dropped unit of the last output."""
  model = SequenceClassifier(hidden=H, dropout=DropoutConfig(output=P))
  g, _ = _grads(model, _x())
  zero = np.asarray(g["head"]["kernel"])[:, 0] == 0
  assert 0 < zero.sum() < H
  none, _ = _grads(SequenceClassifier(hidden=H), _x())
  assert (np.asarray(none["head"]["kernel"]) != 0).all()
