"""Shapes, heads and bad inputs of the models."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lstmdrop_jax import DropoutConfig, LanguageModel, SequenceClassifier


def test_binary_classifier_gives_one_logit_and_reads_last_valid_step():
  x = jax.random.normal(jax.random.key(0), (4, 9, 3))
  m = SequenceClassifier(hidden=6, layers=2)
  v = m.init(jax.random.key(1), x)
  logits = m.apply(v, x)
  assert logits.shape == (4,) and logits.dtype == jnp.float32
  lengths = jnp.array([9, 5, 2, 7])
  padded = m.apply(v, x, lengths=lengths)
  # Garbage after each sequence's end changes nothing.
  noisy = x + 100.0 * (jnp.arange(9)[None, :, None] >= lengths[:, None, None])
  np.testing.assert_allclose(m.apply(v, noisy, lengths=lengths), padded, atol=1e-6)
  for b, n in enumerate(lengths.tolist()):
    np.testing.assert_allclose(padded[b], m.apply(v, x[b : b + 1, :n])[0], atol=1e-6)


def test_multiclass_classifier_shape():
  x = jnp.ones((2, 5, 3))
  m = SequenceClassifier(num_classes=4, hidden=6)
  assert m.apply(m.init(jax.random.key(0), x), x).shape == (2, 4)


def test_classifier_bad_arguments():
  with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
    SequenceClassifier(num_classes=1)
  with pytest.raises(ValueError, match="applies to LanguageModel only"):
    SequenceClassifier(dropout=DropoutConfig(embedding=0.1))
  with pytest.raises(ValueError, match="hidden must be a positive int"):
    SequenceClassifier(hidden=0).init(jax.random.key(0), jnp.ones((1, 2, 3)))


def test_language_model_shapes_carry_and_tying():
  tokens = jax.random.randint(jax.random.key(0), (3, 8), 0, 50)
  lm = LanguageModel(vocab_size=50, hidden=12, layers=2, tie_weights=True, init_scale=0.1)
  v = lm.init(jax.random.key(1), tokens)
  assert "head" not in v["params"]
  assert all(float(jnp.abs(a).max()) <= 0.1 for a in jax.tree.leaves(v["params"]))
  logits, carry = lm.apply(v, tokens)
  assert logits.shape == (3, 8, 50) and len(carry) == 2 and carry[0][0].shape == (3, 12)
  # Two halves with the carry passed through equal the whole window.
  l1, c1 = lm.apply(v, tokens[:, :4])
  l2, _ = lm.apply(v, tokens[:, 4:], carry=c1)
  np.testing.assert_allclose(jnp.concatenate([l1, l2], 1), logits, atol=1e-5)


def test_embedding_dropout_drops_whole_words():
  V = 20
  tokens = jnp.tile(jnp.arange(V), (4, 3))  # every word appears 12 times
  lm = LanguageModel(vocab_size=V, hidden=5, layers=1, dropout=DropoutConfig(embedding=0.5))
  v = lm.init(jax.random.key(0), tokens)
  got = lm.bind(v, rngs={"dropout": jax.random.key(1)})
  # Intercept the stack's input: the embeddings after embedding dropout.
  seen = {}
  orig = type(got)._lstm

  def spy(self, **inits):
    stack = orig(self, **inits)

    def call(x, **kw):
      seen["x"] = x
      return stack(x, **kw)

    return call

  type(got)._lstm = spy
  try:
    got(tokens, train=True)
  finally:
    del type(got)._lstm  # back to the inherited method
  x = seen["x"]
  dropped = jnp.all(x == 0, axis=-1)  # [B, T]
  for w in range(V):
    d = dropped[tokens == w]
    assert bool(jnp.all(d)) or not bool(jnp.any(d)), f"word {w} dropped only sometimes"
  assert 0 < int(dropped[0, :V].sum()) < V
  # A kept word's embedding is scaled by 1 / (1 - p).
  table = v["params"]["embed"]["embedding"]
  np.testing.assert_allclose(x[~dropped], table[tokens][~dropped] / 0.5, rtol=1e-6)


def test_weight_dropout_is_dropconnect_on_the_recurrent_kernel(monkeypatch):
  """``weight=p``: one keep mask over ``W_hh`` per forward pass, kept entries scaled by
  1 / (1 - p); the pass equals a deterministic one with that kernel."""
  from lstmdrop_jax import LSTMStack
  from tests.helpers import record_masks

  x = jax.random.normal(jax.random.key(0), (3, 7, 4))
  stack = LSTMStack(hidden=6, layers=2, dropout=DropoutConfig(weight=0.4))
  v = stack.init(jax.random.key(1), x)
  with monkeypatch.context() as m:
    drawn = record_masks(m, "keep_mask")
    y = stack.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)})
  assert [d.shape for d in drawn] == [(6, 24)] * 2  # one [H, 4H] mask per layer
  params = jax.tree.map(lambda a: a, v["params"])
  for layer, keep in enumerate(drawn):
    kernel = params[f"layer_{layer}"]["kernel_hh"]
    params[f"layer_{layer}"]["kernel_hh"] = kernel * keep / 0.6
  want = LSTMStack(hidden=6, layers=2).apply({"params": params}, x)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
  assert not np.allclose(y, stack.apply(v, x))


def test_language_model_bad_inputs():
  with pytest.raises(ValueError, match="tie_weights needs embed_dim == hidden"):
    LanguageModel(vocab_size=10, hidden=8, embed_dim=4, tie_weights=True)
  lm = LanguageModel(vocab_size=10, hidden=4)
  with pytest.raises(ValueError, match=r"int token ids of shape \[batch, time\]"):
    lm.init(jax.random.key(0), jnp.ones((2, 3, 4)))


def test_tied_gradient_equals_an_untied_model_tied_by_hand():
  V, H = 30, 8
  tokens = jax.random.randint(jax.random.key(0), (3, 7), 0, V)
  targets = jnp.roll(tokens, -1, axis=1)
  tied = LanguageModel(vocab_size=V, hidden=H, layers=2, tie_weights=True, init_scale=0.1)
  untied = tied.clone(tie_weights=False)
  p_tied = tied.init(jax.random.key(1), tokens)["params"]
  assert p_tied["head_bias"].shape == (V,) and not p_tied["head_bias"].any()
  p_tied = dict(p_tied, head_bias=jax.random.normal(jax.random.key(2), (V,)))  # not all zero

  def nll(logits):
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

  def tied_loss(p):
    return nll(tied.apply({"params": p}, tokens)[0])

  def by_hand(p):  # the untied model, its softmax kernel set to the embedding's transpose
    rest = {k: v for k, v in p.items() if k != "head_bias"}
    head = {"kernel": p["embed"]["embedding"].T, "bias": p["head_bias"]}
    return nll(untied.apply({"params": {**rest, "head": head}}, tokens)[0])

  np.testing.assert_allclose(tied_loss(p_tied), by_hand(p_tied), rtol=1e-6)
  got, want = jax.grad(tied_loss)(p_tied), jax.grad(by_hand)(p_tied)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, want)
  # The embedding's gradient has both parts: input rows and softmax kernel.
  untied_p = {
    **{k: v for k, v in p_tied.items() if k != "head_bias"},
    "head": {"kernel": p_tied["embed"]["embedding"].T, "bias": p_tied["head_bias"]},
  }
  g_untied = jax.grad(lambda p: nll(untied.apply({"params": p}, tokens)[0]))(untied_p)
  both = g_untied["embed"]["embedding"] + g_untied["head"]["kernel"].T
  np.testing.assert_allclose(got["embed"]["embedding"], both, rtol=1e-5, atol=1e-7)
