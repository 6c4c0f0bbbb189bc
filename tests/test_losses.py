"""losses.softmax_xent_sum and the language model's blocked head: the plain head's loss and
gradients, block by block."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lstmdrop_jax import DropoutConfig, LanguageModel, steps
from lstmdrop_jax.losses import plain_xent_sum, softmax_xent_sum
from lstmdrop_jax.train import Config


def _head(n=37, h=8, v=50):
  k = jax.random.split(jax.random.key(0), 5)
  return (
    jax.random.normal(k[0], (n, h)),
    jax.random.normal(k[1], (v, h)),
    jax.random.normal(k[2], (v,)),
    jax.random.randint(k[3], (n,), 0, v),
    (jax.random.uniform(k[4], (n,)) > 0.3).astype(jnp.float32),  # some rows weigh 0
  )


@pytest.mark.parametrize("block_rows", [1, 5, 37, 64])  # dividing N or not, more than N
def test_blocked_loss_and_gradients_equal_the_plain_heads(block_rows):
  f, kernel, bias, y, w = _head()
  # A cotangent other than 1: the backward pass scales the gradients it saved.
  plain = jax.value_and_grad(lambda *a: 0.3 * plain_xent_sum(*a[:3], y, a[3]), (0, 1, 2, 3))
  blocked = jax.value_and_grad(
    lambda *a: 0.3 * softmax_xent_sum(*a[:3], y, a[3], block_rows), (0, 1, 2, 3)
  )
  (want, want_grads), (got, got_grads) = plain(f, kernel, bias, w), blocked(f, kernel, bias, w)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  names = ("features", "kernel", "bias", "weights")
  for name, a, b in zip(names, got_grads, want_grads, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
  # Rows of weight 0 get no gradient.
  assert not np.any(got_grads[0][w == 0])


def test_blocked_head_without_gradients_is_the_plain_head():
  f, kernel, bias, y, w = _head()
  np.testing.assert_array_equal(
    jax.jit(softmax_xent_sum, static_argnums=5)(f, kernel, bias, y, w, 5),
    jax.jit(plain_xent_sum)(f, kernel, bias, y, w),
  )


def _step_params(tied: bool, block_rows: int | None, mask: bool):
  model = LanguageModel(
    vocab_size=40, hidden=8, layers=2, tie_weights=tied, head_block_rows=block_rows,
    dropout=DropoutConfig(0.2, 0.2, 0.2, embedding=0.1), init_scale=0.1,
  )  # fmt: skip
  x = jax.random.randint(jax.random.key(1), (3, 7), 0, 40)
  batch = {"x": x, "y": jnp.roll(x, -1, 1)}
  if mask:
    batch["mask"] = jnp.arange(7)[None, :] < jnp.array([7, 4, 0])[:, None]
  tx = optax.sgd(0.5)
  state = steps.create_train_state(model, tx, jax.random.key(2), x, steps.LANGUAGE_MODEL)
  step = jax.jit(steps.make_train_step(model, tx, steps.LANGUAGE_MODEL))
  state, metrics = step(state, batch, jax.random.key(3))
  return state.params, metrics


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("mask", [False, True])
def test_a_language_models_step_with_a_blocked_head_is_the_plain_step(tied, mask):
  want, want_metrics = _step_params(tied, None, mask)
  got, got_metrics = _step_params(tied, 4, mask)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for k in ("loss_sum", "count", "grad_norm"):
    np.testing.assert_allclose(got_metrics[k], want_metrics[k], rtol=1e-5)


def test_the_model_scores_targets_itself_with_the_logits_loss():
  model = LanguageModel(vocab_size=30, hidden=6, layers=1, head_block_rows=4)
  x = jax.random.randint(jax.random.key(0), (2, 5), 0, 30)
  y = jnp.roll(x, -1, 1)
  # Initialised through the scoring call, an untied head has the logits call's parameters.
  v = model.init(jax.random.key(1), x, targets_BT=y)
  assert jax.tree.structure(v) == jax.tree.structure(model.init(jax.random.key(1), x))
  logits, _ = model.apply(v, x)
  loss_sum, _ = model.apply(v, x, targets_BT=y)
  want = optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()
  np.testing.assert_allclose(loss_sum, want, rtol=1e-6)


def test_bad_block_rows_are_refused():
  with pytest.raises(ValueError, match="head_block_rows must be >= 1 or None, got 0"):
    LanguageModel(vocab_size=10, head_block_rows=0)
  with pytest.raises(ValueError, match="head_block_rows must be an integer >= 1"):
    Config(dataset="ptb", head_block_rows=0).validate()


def test_the_config_reaches_the_language_model():
  from lstmdrop_jax.tasks.language_model import LanguageModelTask

  config = Config(dataset="ptb", hidden=8, head_block_rows=350)
  assert LanguageModelTask.model_from(config, {"vocab_size": 10}).head_block_rows == 350


def test_bf16_features_get_a_bf16_gradient_as_under_autodiff():
  f, kernel, bias, y, w = _head()
  f16 = f.astype(jnp.bfloat16)
  got = jax.grad(lambda a: softmax_xent_sum(a, kernel, bias, y, w, 5))(f16)
  want = jax.grad(lambda a: plain_xent_sum(a, kernel, bias, y, w))(f16)
  assert got.dtype == want.dtype == jnp.bfloat16
