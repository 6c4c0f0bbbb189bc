"""One training step of two fixed tiny models, pinned to the numbers it gave.

Seed, batch, dropout key and optimiser are fixed; dropout is on at several
placements (input, between, output, recurrent, per-gate masks and zoneout for
the classifier; whole-word, input, output, recurrent, weight and Semeniuta
for the language model). The loss, the global gradient norm and the parameters' norm
after one SGD step are written below: any change to the initialisation, the
masks, the inverted-dropout scaling, the cell, the loss or the update moves
them. A change that moves them on purpose rewrites them (``python -m pytest
tests/test_golden.py`` prints the new values in its failure).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstmdrop_jax import DropoutConfig, LanguageModel, SequenceClassifier, optim, steps

RTOL = 1e-6

SIZE = {"hidden": 8, "layers": 2, "unroll": 1}
CLASSIFIER = SequenceClassifier(
  num_classes=3,
  dropout=DropoutConfig(0.2, 0.3, 0.25, recurrent=0.2, zoneout_h=0.1, per_gate=True),
  **SIZE,
)
LANGUAGE_MODEL = LanguageModel(
  vocab_size=13,
  dropout=DropoutConfig(0.2, 0.0, 0.3, recurrent=0.2, weight=0.1, embedding=0.1, semeniuta=0.2),
  **SIZE,
)


def _classifier_batch():
  b, t, f = np.meshgrid(np.arange(5), np.arange(7), np.arange(3), indexing="ij")
  return {
    "x": jnp.asarray(np.sin(0.7 * t + 1.3 * b + 0.4 * f), jnp.float32),  # [B, T, F]
    "y": jnp.array([0, 1, 2, 1, 0]),
    "mask": jnp.array([True, True, True, True, False]),  # a padding row
    "lengths": jnp.array([7, 4, 7, 1, 7]),
  }


def _lm_batch():
  tokens = (np.arange(4 * 7).reshape(4, 7) * 5 + 3) % 13
  return {"x": jnp.asarray(tokens[:, :-1], jnp.int32), "y": jnp.asarray(tokens[:, 1:], jnp.int32)}


def _one_step(model, objective, batch):
  """``(mean loss, gradient norm, parameter norm after the step)`` of one SGD step."""
  tx = optim.make_optimizer("sgd", 0.5)
  with jax.default_matmul_precision("highest"):
    state = steps.create_train_state(model, tx, jax.random.key(0), batch["x"], objective)
    step = jax.jit(steps.make_train_step(model, tx, objective))
    new, m = step(state, batch, jax.random.key(1))
  return (
    float(m["loss_sum"] / m["count"]),
    float(m["grad_norm"]),
    float(optim.global_norm(new.params)),
  )


@pytest.mark.parametrize(
  ("model", "objective", "batch", "want"),
  [
    (
      CLASSIFIER,
      steps.CLASSIFIER,
      _classifier_batch,
      (1.0758569240570068, 0.3772614896297455, 10.138189315795898),
    ),
    (
      LANGUAGE_MODEL,
      steps.LANGUAGE_MODEL,
      _lm_batch,
      (2.578688621520996, 0.9247831106185913, 14.612837791442871),
    ),
  ],
  ids=["classifier", "language_model"],
)
def test_one_training_step_gives_the_pinned_loss_gradient_and_parameters(
  model, objective, batch, want
):
  got = _one_step(model, objective, batch())
  np.testing.assert_allclose(got, want, rtol=RTOL, err_msg=f"(loss, grad norm, param norm): {got}")
