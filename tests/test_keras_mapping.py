"""docs/keras.md's table, one test per row, checked the way a user can check a mask:
by which entries of a gradient are exactly zero under ``train=True`` with a fixed key.

* A dropped entry of the input gives that entry of ``dL/dx`` an exact zero.
* A dropped unit of a layer's output gives that entry of ``dL/dy`` an exact zero
  (``dL/dy``: the gradient of a zero perturbation added to the layer's output,
  through ``flax.linen.intercept_methods``).
* With one sequence (B = 1) a mask that holds for the whole sequence zeroes whole
  rows of the next kernel's gradient, one per dropped unit, in each gate block
  (i, f, g, o) of the ``[in, 4H]`` kernel: the same rows in all four blocks when
  the gates share the mask, other rows in each block with one mask per gate.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lstmdrop_jax import DropoutConfig, LSTMStack, SequenceClassifier
from lstmdrop_jax.lstm import LSTMLayer

P, H, F, T = 0.5, 8, 4, 5


def _stack(layers: int = 2, **dropout) -> LSTMStack:
  return LSTMStack(hidden=H, layers=layers, dropout=DropoutConfig(**dropout))


def _x(batch: int) -> jax.Array:
  return jax.random.normal(jax.random.key(3), (batch, T, F)) + 1.0


def _params(model: nn.Module, x: jax.Array) -> dict:
  """Parameters of ``model``'s shapes drawn from N(0, 0.5^2): every entry non-zero, and
  no compiled ``init`` (a second each on a CPU)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), s.dtype), shapes)


def _grads(
  model: nn.Module, batch: int = 1, key: int = 1
) -> tuple[dict, np.ndarray, list[np.ndarray]]:
  """Gradients of the summed outputs under ``train=True`` and dropout key ``key``: with
  respect to the parameters, the input ``x [B, T, F]`` and each LSTM layer's output
  (``[B, T, H]``, what the ``between`` or ``output`` mask acts on)."""
  x = _x(batch)
  params = _params(model, x)
  eps = [jnp.zeros((T, batch, H)) for _ in range(model.layers)]  # time-major, as the layers

  def loss(params: dict, x: jax.Array, eps: list) -> jax.Array:
    def perturb(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if isinstance(context.module, LSTMLayer) and context.method_name == "__call__":
        carry, y_TBH = out
        return carry, y_TBH + eps[int(context.module.name.split("_")[1])]
      return out

    with nn.intercept_methods(perturb):
      out = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(key)})
    return jnp.sum(out)

  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(params, x, eps)
  # XLA's backend optimisations cost more than they save on these tiny programs.
  g, dx, deps = grad.compile({"xla_backend_optimization_level": 0})(params, x, eps)
  return g, np.asarray(dx), [np.asarray(d).swapaxes(0, 1) for d in deps]


def _zero_rows_by_gate(kernel_grad: jax.Array) -> np.ndarray:
  """``[4, rows]``: which rows of each gate block (i, f, g, o) of an ``[in, 4H]`` kernel
  gradient are exactly zero."""
  g = np.asarray(kernel_grad)
  return (g.reshape(g.shape[0], 4, H) == 0).all(axis=2).T


def _changes_over_time(zero_BTX: np.ndarray) -> bool:
  """Whether the zero pattern of some sequence differs between two time steps."""
  return bool((zero_BTX != zero_BTX[:, :1]).any())


def _differs_between_sequences(zero_BTX: np.ndarray) -> bool:
  return bool((zero_BTX != zero_BTX[:1]).any())


def test_dropout_before_the_first_lstm_is_input_per_step():
  """``Dropout(p) -> LSTM``: a fresh mask per step and feature on ``x``."""
  _, dx, _ = _grads(_stack(1, input=P), batch=3)
  zero = dx == 0
  assert 0.3 < zero.mean() < 0.7
  assert _changes_over_time(zero)


def test_dropout_between_lstms_is_between_per_step():
  """``LSTM(return_sequences=True) -> Dropout(p) -> LSTM``: a fresh mask per step and unit
  on the first layer's output; nothing dropped on ``x``."""
  _, dx, dy = _grads(_stack(between=P), batch=3)
  zero = dy[0] == 0
  assert 0.3 < zero.mean() < 0.7
  assert _changes_over_time(zero)
  assert (dx != 0).all() and (dy[1] != 0).all()


def test_dropout_after_an_lstm_sequence_is_output_per_step():
  """``LSTM(return_sequences=True) -> Dropout(p)``: a fresh mask per step and unit on the
  last layer's output."""
  _, dx, dy = _grads(_stack(1, output=P), batch=3)
  zero = dy[0] == 0
  assert 0.3 < zero.mean() < 0.7
  assert _changes_over_time(zero)
  assert (dx != 0).all()


def test_dropout_after_the_last_lstm_is_output_on_a_classifier():
  """``LSTM(return_sequences=False) -> Dropout(p) -> Dense``: a mask on the last output
  only; with B = 1 each dropped unit gives a zero row of the head's kernel gradient."""
  model = SequenceClassifier(hidden=H, dropout=DropoutConfig(output=P))
  g, _, _ = _grads(model)
  zero = (np.asarray(g["head"]["kernel"]) == 0).all(axis=1)
  assert 0 < zero.sum() < H


def test_spatial_dropout_1d_is_input_time_locked():
  """``SpatialDropout1D(p) -> LSTM``: a whole feature channel dropped at every step of a
  sequence, another mask for each sequence, the same for the four gates."""
  _, dx, _ = _grads(_stack(1, input=P, time_locked=True), batch=3)
  zero = dx == 0
  assert 0.3 < zero.mean() < 0.7
  assert not _changes_over_time(zero)
  assert _differs_between_sequences(zero)


def test_spatial_dropout_1d_between_lstms_is_between_time_locked():
  """``LSTM -> SpatialDropout1D(p) -> LSTM``: a whole unit of the first layer's output
  dropped at every step of a sequence, another mask for each sequence."""
  _, _, dy = _grads(_stack(between=P, time_locked=True), batch=3)
  zero = dy[0] == 0
  assert 0.3 < zero.mean() < 0.7
  assert not _changes_over_time(zero)
  assert _differs_between_sequences(zero)


def test_lstm_dropout_is_input_and_between_time_locked_shared_by_the_gates():
  """Stacked ``LSTM(dropout=p)``: one mask per sequence on each layer's input (``x`` and
  the first layer's output), the same for the four gates, none on the last output."""
  model = _stack(input=P, between=P, time_locked=True)
  _, dx, dy = _grads(model, batch=3)
  for zero in (dx == 0, dy[0] == 0):
    assert 0.3 < zero.mean() < 0.7
    assert not _changes_over_time(zero)
    assert _differs_between_sequences(zero)
  assert (dy[1] != 0).all()
  g, _, _ = _grads(model)
  for layer in ("layer_0", "layer_1"):
    rows = _zero_rows_by_gate(g[layer]["kernel_ih"])
    assert rows[0].any() and not rows[0].all()
    assert (rows == rows[0]).all()  # every gate block loses the same rows


def test_lstm_recurrent_dropout_is_recurrent_per_gate():
  """``LSTM(dropout=p, recurrent_dropout=q)``: one mask per sequence and gate on
  ``h_{t-1}`` (zero rows of ``dW_hh`` that differ between the gate blocks), and on each
  layer's input."""
  g, _, _ = _grads(_stack(input=P, between=P, recurrent=P, time_locked=True, per_gate=True))
  for layer in ("layer_0", "layer_1"):
    for kernel in ("kernel_hh", "kernel_ih"):
      rows = _zero_rows_by_gate(g[layer][kernel])
      assert rows.any(axis=1).all(), (layer, kernel)  # every gate block drops units
      assert not (rows == rows[0]).all(), (layer, kernel)  # not the same ones
