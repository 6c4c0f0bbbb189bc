"""Converters: exact round trips and functional parity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstmdrop_jax import LSTMStack, from_keras_lstm, from_torch_lstm, to_keras_lstm, to_torch_lstm


def test_ours_to_torch_to_ours_is_exact():
  stack = LSTMStack(hidden=6, layers=3)
  params = jax.tree.map(np.asarray, stack.init(jax.random.key(0), jnp.ones((1, 2, 4)))["params"])
  back = from_torch_lstm(to_torch_lstm(params))
  jax.tree.map(np.testing.assert_array_equal, back, params)


def test_torch_to_ours_to_torch_is_exact_up_to_the_bias_split(torch_weights):
  sd = torch_weights(layers=2)
  back = to_torch_lstm(from_torch_lstm(sd))
  assert set(back) == set(sd)
  for k in range(2):
    for name in ("weight_ih", "weight_hh"):
      np.testing.assert_array_equal(back[f"{name}_l{k}"], sd[f"{name}_l{k}"])
    # PyTorch's two biases only ever appear as their sum.
    np.testing.assert_array_equal(
      back[f"bias_ih_l{k}"] + back[f"bias_hh_l{k}"], sd[f"bias_ih_l{k}"] + sd[f"bias_hh_l{k}"]
    )
  # And the round trip is exact from there on.
  again = to_torch_lstm(from_torch_lstm(back))
  jax.tree.map(np.testing.assert_array_equal, again, back)


def test_keras_round_trips_exactly():
  rng = np.random.default_rng(0)
  weights = [
    [rng.normal(size=(4, 20)), rng.normal(size=(5, 20)), rng.normal(size=(20,))],
    [rng.normal(size=(5, 20)), rng.normal(size=(5, 20)), rng.normal(size=(20,))],
  ]
  weights = [[w.astype(np.float32) for w in layer] for layer in weights]
  back = to_keras_lstm(from_keras_lstm(weights))
  jax.tree.map(np.testing.assert_array_equal, back, weights)
  stack = LSTMStack(hidden=5, layers=2)
  params = jax.tree.map(np.asarray, stack.init(jax.random.key(0), jnp.ones((1, 2, 4)))["params"])
  jax.tree.map(np.testing.assert_array_equal, from_keras_lstm(to_keras_lstm(params)), params)


def test_keras_and_torch_imports_give_the_same_function(torch_weights):
  sd = torch_weights(layers=1, F=3, H=4)
  keras = [[sd["weight_ih_l0"].T, sd["weight_hh_l0"].T, sd["bias_ih_l0"] + sd["bias_hh_l0"]]]
  x = jax.random.normal(jax.random.key(0), (2, 6, 3))
  stack = LSTMStack(hidden=4)
  y_t = stack.apply({"params": from_torch_lstm(sd)}, x)
  y_k = stack.apply({"params": from_keras_lstm(keras)}, x)
  np.testing.assert_array_equal(y_t, y_k)


def test_cudnn_keras_bias_halves_are_summed():
  rng = np.random.default_rng(1)
  b8 = rng.normal(size=(32,)).astype(np.float32)
  w = [[rng.normal(size=(3, 16)), rng.normal(size=(4, 16)), b8]]
  np.testing.assert_array_equal(from_keras_lstm(w)["layer_0"]["bias"], b8[:16] + b8[16:])


def test_torch_prefix_and_bad_state_dicts(torch_weights):
  sd = {f"lstm.{k}": v for k, v in torch_weights(layers=1).items()}
  assert set(from_torch_lstm(sd)) == {"layer_0"}
  with pytest.raises(ValueError, match=r"no nn\.LSTM weights found"):
    from_torch_lstm({"fc.weight": np.zeros((2, 2))})
  bidir = dict(torch_weights(layers=1), weight_ih_l0_reverse=np.zeros((28, 5)))
  with pytest.raises(ValueError, match="bidirectional and projected"):
    from_torch_lstm(bidir)
  no_bias = {k: v for k, v in torch_weights(layers=1).items() if "bias" not in k}
  with pytest.raises(ValueError, match=r"nn.LSTM\(bias=False\) is not supported"):
    from_torch_lstm(no_bias)
  with pytest.raises(ValueError, match="expected LSTMStack parameters"):
    to_torch_lstm({"lstm": {}})
