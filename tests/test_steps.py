"""Steps, losses and schedules; language-model training through the loop."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lstmdrop_jax import DropoutConfig, LanguageModel, SequenceClassifier, optim, steps
from lstmdrop_jax.run_folder import read_jsonl
from tests.helpers import PTB_DIR, needs_ptb


def test_classification_metrics_binary_and_multiclass():
  logits = jnp.array([2.0, -1.0, 0.5, 3.0])
  y = jnp.array([1, 1, 0, 0])
  mask = jnp.array([True, True, True, False])
  m = steps.classification_metrics(logits, y, mask)
  p = jax.nn.sigmoid(logits[:3])
  want = -np.sum(np.log(np.where(y[:3] == 1, p, 1 - p)))
  np.testing.assert_allclose(m["loss_sum"], want, rtol=1e-6)
  assert (float(m["correct"]), float(m["count"])) == (1.0, 3.0)
  logits = jnp.array([[3.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
  m = steps.classification_metrics(logits, jnp.array([0, 1]), jnp.array([True, True]))
  assert float(m["correct"]) == 1.0


def test_train_step_is_pure_and_changes_every_parameter():
  model = SequenceClassifier(
    hidden=6, layers=2, dropout=DropoutConfig(0.2, 0.2, 0.2, recurrent=0.1, weight=0.1), unroll=1
  )
  tx = optax.adam(1e-2)
  x = jax.random.normal(jax.random.key(0), (8, 5, 3))
  batch = {"x": x, "y": jnp.arange(8) % 2, "mask": jnp.ones(8, bool)}
  state = steps.create_train_state(model, tx, jax.random.key(1), x, steps.CLASSIFIER)
  step = jax.jit(steps.make_train_step(model, tx, steps.CLASSIFIER))
  s1, m1 = step(state, batch, jax.random.key(2))
  s1b, m1b = step(state, batch, jax.random.key(2))
  jax.tree.map(np.testing.assert_array_equal, (s1.params, m1), (s1b.params, m1b))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, s1.params)
  assert all(jax.tree.leaves(changed)), changed
  assert int(s1.step) == 1
  # The step's masks depend on state.step: the next step draws other masks.
  _, m2 = step(s1, batch, jax.random.key(2))
  assert float(m2["loss_sum"]) != float(m1["loss_sum"])


def test_a_language_models_step_sums_no_wide_leaf_by_2d_windows():
  """The gradient norm (metric and clipping) sums a leaf by rows: XLA's CPU backend
  sums a whole 2-D leaf as 32x32 windows first, slowly on a wide softmax kernel."""
  lm = LanguageModel(vocab_size=96, hidden=40, layers=1, dropout=DropoutConfig(0.5, 0.5, 0.5))
  tx = optim.make_optimizer("sgd", 1.0, clip_norm=5.0)
  x = jnp.zeros((4, 6), jnp.int32)
  state = steps.create_train_state(lm, tx, jax.random.key(0), x, steps.LANGUAGE_MODEL)
  step = jax.jit(steps.make_train_step(lm, tx, steps.LANGUAGE_MODEL))
  hlo = step.lower(state, {"x": x, "y": x}, jax.random.key(1)).compile().as_text()
  windows = re.findall(r"reduce-window\(.*?window=\{size=([0-9x]+)", hlo)
  assert not [w for w in windows if sum(int(n) > 1 for n in w.split("x")) > 1], windows


def test_language_model_carry_continuity_in_eval_step():
  lm = LanguageModel(vocab_size=30, hidden=8, layers=2, unroll=1)
  tokens = jax.random.randint(jax.random.key(0), (2, 17), 0, 30)
  x, y = tokens[:, :-1], tokens[:, 1:]
  state = steps.create_train_state(lm, optax.sgd(1.0), jax.random.key(1), x, steps.LANGUAGE_MODEL)
  ev = steps.make_eval_step(lm, steps.LANGUAGE_MODEL)
  carry0 = lm.initialize_carry(2)
  full, c_full = ev(state, {"x": x, "y": y}, carry0)
  a, c_half = ev(state, {"x": x[:, :8], "y": y[:, :8]}, carry0)
  b, c_end = ev(state, {"x": x[:, 8:], "y": y[:, 8:]}, c_half)
  np.testing.assert_allclose(a["loss_sum"] + b["loss_sum"], full["loss_sum"], rtol=1e-5)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=1e-6), c_end, c_full)


def test_mc_dropout_averages_stochastic_passes():
  model = SequenceClassifier(hidden=6, dropout=DropoutConfig(output=0.5), unroll=1)
  x = jax.random.normal(jax.random.key(0), (4, 5, 3))
  batch = {"x": x, "y": jnp.array([0, 1, 0, 1]), "mask": jnp.array([True, True, True, False])}
  state = steps.create_train_state(model, optax.sgd(0.1), jax.random.key(1), x, steps.CLASSIFIER)
  samples, key = 16, jax.random.key(3)
  m = steps.make_mc_eval_step(model, samples=samples)(state, batch, key)
  # The same passes by hand: one key each, dropout on, probabilities averaged.
  variables = {"params": state.params}
  passes = [
    jax.nn.sigmoid(model.apply(variables, x, train=True, rngs={"dropout": k}))
    for k in jax.random.split(key, samples)
  ]
  assert len({tuple(np.asarray(p).round(6)) for p in passes}) > 1  # dropout is on
  p = np.mean(passes, axis=0)[:3]  # the fourth row is masked out
  y = np.array([0, 1, 0])
  nll = -np.sum(np.where(y == 1, np.log(p + 1e-7), np.log(1 - p + 1e-7)))
  np.testing.assert_allclose(m["loss_sum"], nll, rtol=1e-5)
  assert float(m["correct"]) == float(np.sum((p > 0.5) == y))
  assert float(m["count"]) == 3.0
  # One pass with rate 0 equals the deterministic evaluation.
  off_state = state.replace(dropout=DropoutConfig().as_arrays())
  off = steps.make_mc_eval_step(model.clone(dropout=DropoutConfig()), samples=1)
  det, _ = steps.make_eval_step(model, steps.CLASSIFIER)(off_state, batch)
  got = off(off_state, batch, jax.random.key(0))
  np.testing.assert_allclose(got["loss_sum"], det["loss_sum"], rtol=1e-4)
  assert float(got["correct"]) == float(det["correct"])
  with pytest.raises(ValueError, match="classifiers only"):
    steps.make_mc_eval_step(LanguageModel(vocab_size=5, hidden=4), samples=2)


@needs_ptb
def test_tiny_language_model_run_lowers_validation_perplexity(tmp_path):
  from lstmdrop_jax.train import Config, train_and_evaluate

  cfg = Config(
      dataset="ptb", data_dir=str(PTB_DIR), hidden=16, layers=1, num_steps=10, batch_size=20,
      train_tokens=30_000, eval_tokens=20_000, optimizer="sgd", learning_rate=1.0,
      init_scale=0.1, epochs=2, dropout=DropoutConfig(input=0.1, output=0.1), unroll=1,
  )  # fmt: skip
  summary = train_and_evaluate(cfg, tmp_path / "lm")
  evals = [r for r in read_jsonl(tmp_path / "lm" / "metrics.jsonl") if r.get("event") == "eval"]
  assert [e["epoch"] for e in evals] == [1, 2]
  assert evals[1]["val/ppl"] < evals[0]["val/ppl"] < 10_000  # better than uniform
  assert summary["final"]["test/ppl"] < 10_000
