"""Monte-Carlo dropout for a language model: each word's probability averaged over passes
that each read the whole test stream with dropout on."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lstmdrop_jax import DropoutConfig, LanguageModel, steps
from lstmdrop_jax.data import text
from lstmdrop_jax.tasks.language_model import mc_test_nll

V, H = 13, 8


def _setup(dropout):
  model = LanguageModel(vocab_size=V, hidden=H, layers=2, dropout=dropout, unroll=1)
  tx = optax.sgd(0.1)
  state = steps.create_train_state(
    model, tx, jax.random.key(0), np.zeros((1, 5), np.int32), steps.LANGUAGE_MODEL
  )
  tokens = np.random.default_rng(0).integers(0, V, 61).astype(np.int32)
  return model, state, text.eval_stream(tokens, 5, 1)


def _deterministic_nll(model, state, stream):
  evaluate = steps.make_evaluate(model, steps.LANGUAGE_MODEL)
  m = evaluate(state, {n: jnp.asarray(a) for n, a in stream.items()})
  return float(m["loss_sum"]), float(m["count"])


def test_without_dropout_every_pass_is_the_deterministic_one():
  model, state, stream = _setup(DropoutConfig())
  m = mc_test_nll(model, state, stream, jax.random.key(1), samples=3)
  want_nll, want_count = _deterministic_nll(model, state, stream)
  assert m["count"] == want_count == 60
  np.testing.assert_allclose(m["nll"], want_nll, rtol=1e-5)
  np.testing.assert_allclose(m["pass_nll"], [want_nll] * 3, rtol=1e-5)


def test_passes_differ_and_their_mean_probability_beats_their_mean_loss():
  """With dropout the passes differ; -log of the mean probability is at most the mean of
  the passes' -log p (Jensen), with equality only if the passes agree."""
  model, state, stream = _setup(DropoutConfig(0.5, 0.5, 0.5, recurrent=0.3, embedding=0.2))
  key = jax.random.key(1)
  m = mc_test_nll(model, state, stream, key, samples=4)
  assert len(set(m["pass_nll"].tolist())) == 4
  assert m["nll"] < np.mean(m["pass_nll"])
  # The same key gives the same estimate; a single pass is that pass's own loss.
  assert mc_test_nll(model, state, stream, key, samples=4)["nll"] == m["nll"]
  single = mc_test_nll(model, state, stream, key, samples=1)
  np.testing.assert_allclose(single["nll"], single["pass_nll"][0], rtol=1e-6)
  with pytest.raises(ValueError, match="samples must be an int >= 1"):
    mc_test_nll(model, state, stream, key, samples=0)


def test_the_estimate_is_the_mean_probability_of_passes_with_their_documented_keys():
  """Written out pass by pass and window by window: pass ``s`` carries its own state and
  draws window ``w``'s masks from ``fold_in(split(key)[s], w)``; a word's probability is
  the mean over the passes."""
  model, state, stream = _setup(DropoutConfig(0.5, 0.5, 0.5, recurrent=0.3, embedding=0.2))
  key, samples = jax.random.key(7), 3
  m = mc_test_nll(model, state, stream, key, samples=samples)
  forward = jax.jit(
    lambda batch, key, carry: steps.forward(
      model, steps.LANGUAGE_MODEL, state.params, state, batch, train=True, key=key, carry=carry
    )
  )
  logp = []  # [samples, words]
  for k in jax.random.split(key, samples):
    carry, words = model.initialize_carry(1), []
    for w in range(stream["x"].shape[0]):
      batch = {n: jnp.asarray(a[w]) for n, a in stream.items()}
      logits, carry = forward(batch, jax.random.fold_in(k, w), carry)
      lp = jax.nn.log_softmax(logits.astype(jnp.float32))
      lp = np.take_along_axis(np.asarray(lp), stream["y"][w][..., None], -1)[..., 0]
      words.append(lp[stream["mask"][w].astype(bool)])
    logp.append(np.concatenate(words))
  logp = np.asarray(logp, np.float64)
  assert logp.shape == (samples, 60)
  np.testing.assert_allclose(m["pass_nll"], -logp.sum(1), rtol=1e-5)
  want = -np.sum(np.log(np.mean(np.exp(logp), axis=0)))
  np.testing.assert_allclose(m["nll"], want, rtol=1e-5)


def test_an_early_stopped_language_model_is_scored_on_its_test_split(tmp_path):
  """The test split is scored only at a run's last epoch, which early stopping decides."""
  from lstmdrop_jax.train import Config, train_and_evaluate

  corpus = _corpus(tmp_path)
  cfg = Config(
    dataset="text", data_dir=str(corpus), hidden=8, layers=1, num_steps=5, batch_size=4,
    optimizer="sgd", learning_rate=5.0, epochs=30, unroll=1, early_stopping=1,
  )  # fmt: skip
  summary = train_and_evaluate(cfg, tmp_path / "lm", progress=False)
  assert summary["status"] == "early_stopped" and summary["epochs"] < 30
  assert np.isfinite(summary["final"]["test/ppl"])


def _corpus(tmp_path):
  """A tiny word-level corpus of 9 random words: train, valid and test files."""
  rng = np.random.default_rng(0)
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  for split, n in (("train", 400), ("valid", 60), ("test", 60)):
    words = [f"w{i}" for i in rng.integers(0, 9, n)]
    (corpus / f"{split}.txt").write_text(" ".join(words) + "\n")
  return corpus


def test_a_language_model_run_reports_its_mc_test_perplexity(tmp_path):
  from lstmdrop_jax.train import Config, train_and_evaluate

  corpus = _corpus(tmp_path)
  cfg = Config(
    dataset="text", data_dir=str(corpus), hidden=8, layers=1, num_steps=5, batch_size=4,
    optimizer="sgd", learning_rate=1.0, epochs=2, unroll=1, mc_samples=3,
    dropout=DropoutConfig(input=0.3, output=0.3),
  )  # fmt: skip
  summary = train_and_evaluate(cfg, tmp_path / "lm", progress=False)
  mc, final = summary["mc"], summary["final"]
  assert mc["samples"] == 3 and set(mc) == {"samples", "test/loss", "test/ppl"}
  assert np.isfinite(mc["test/ppl"]) and 1.0 < mc["test/ppl"] < 2 * final["test/ppl"]


def test_mc_samples_script_scores_as_the_run_does_and_keeps_placements_off(tmp_path, capsys):
  """scripts/mc_samples.py: its dropout-off row is the run's own test perplexity; one pass
  is its own mean; with every placement kept off the passes are the dropout-off pass."""
  from lstmdrop_jax.train import Config, train_and_evaluate
  from tests.helpers import load_script

  cfg = Config(
    dataset="text", data_dir=str(_corpus(tmp_path)), hidden=8, layers=1, num_steps=5,
    batch_size=4, optimizer="sgd", learning_rate=1.0, epochs=2, unroll=1,
    dropout=DropoutConfig(input=0.3, output=0.3, embedding=0.2),
  )  # fmt: skip
  summary = train_and_evaluate(cfg, tmp_path / "lm", progress=False)
  script = load_script("scripts/mc_samples.py", "mc_samples")
  run = [str(tmp_path / "lm"), "--checkpoint", "last"]

  on = script.main([*run, "--samples", "1", "3"])
  np.testing.assert_allclose(on["standard"], summary["final"]["test/ppl"], rtol=1e-5)
  assert on[1][0] == pytest.approx(on[1][1], rel=1e-6)  # one pass is its own mean
  assert on[3][0] < on[3][1] and abs(on[3][0] - on["standard"]) > 1e-3
  off = script.main([*run, "--samples", "3", "--off", "input", "output", "embedding"])
  np.testing.assert_allclose([*off[3]], [off["standard"]] * 2, rtol=1e-5)
  assert "off in the passes: input, output, embedding" in capsys.readouterr().out
  with pytest.raises(SystemExit, match="every count must be >= 1"):
    script.main([*run, "--samples", "0"])
  with pytest.raises(SystemExit, match="is not a run folder"):
    script.main([str(tmp_path / "nothing")])
