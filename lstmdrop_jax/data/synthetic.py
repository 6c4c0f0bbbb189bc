"""A synthetic binary sequence task in the motivating text's shape (T=100, F=20).

Small and noisy, so a 2-layer LSTM with 64-128 units memorises the training
set (flipped labels included) while a model that finds the planted signal
still generalises: the over-fitting regime in which dropout is meant to help.
(Calibration, 2-layer LSTM, Adam 1e-3, 120 epochs on the 70 training series:
train accuracy 1.0, test accuracy 0.70-0.90 depending on width and dropout.)

Generative process (everything below comes from ``data_seed`` alone, so the
task is the same for every run; ``seed`` only picks the train/val split):

1. Task: ``SIGNAL_CHANNELS`` of the ``F`` channels are picked at random, each
   with a random sign ``s_k``. The template is a half-sine bump
   ``w[t] = sin(pi (t + 1/2) / BURST)``, ``BURST`` steps long.
2. Each series ``x [T, F]`` is i.i.d. ``N(0, 1)`` noise on every channel, plus
   one burst at an onset drawn uniformly from ``[0, T - BURST]``: on signal
   channel ``k``, class 1 adds ``a * s_k * w`` and class 0 adds the
   negated burst ``-a * s_k * w`` (``a = amplitude``, ``AMPLITUDE`` unless
   the dataset says otherwise). The burst is short and its time
   random, so the model must find it in the noise and remember its sign until
   the last step; 17 of the 20 channels are pure distractors.
3. The pool (the "official train split", ``n_pool`` series) and the test set
   (``n_test``) have balanced classes. A fraction ``label_noise`` of the pool
   labels is flipped (exactly ``round(label_noise * n_pool)`` of them); the
   test labels are clean.
4. ``seed`` splits the pool into train/val, stratified by the (noisy) label;
   the split sizes do not depend on ``seed``.

The data is unit-scale by construction, so it is not z-normalised.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lstmdrop_jax.data.batching import Dataset, Split, check_val_fraction, stratified_split

#: Channels that carry the burst.
SIGNAL_CHANNELS = 3
#: Length of the burst in time steps.
BURST = 12
#: Peak amplitude of the burst, in units of the noise standard deviation.
AMPLITUDE = 2.0

# Independent random streams of one data_seed: changing n_test leaves the pool alone.
_TASK, _POOL, _TEST = 0, 1, 2


#: The named synthetic datasets: ``generate_task``'s keywords of each.
#: ``synthetic_large`` holds out enough series to separate settings a few
#: points apart (with ``val_fraction=0.5``: 300 train, 300 val, 1,000 test),
#: shorter series keep it cheap, and its 300 training series, 10% of them
#: mislabelled, are still memorised by a 2x64 LSTM without dropout.
NAMED: dict[str, dict[str, Any]] = {
  "synthetic": {},
  "synthetic_large": dict(n_pool=600, n_test=1000, length=40, amplitude=1.0),
}


@dataclasses.dataclass(frozen=True)
class SyntheticTask:
  """The generated task before the train/val split.

  Attributes:
    pool_x: ``[n_pool, T, F]`` float32, the official train split.
    pool_y: ``[n_pool]`` int32 labels, with ``label_noise`` of them flipped.
    pool_y_clean: ``[n_pool]`` int32 labels before flipping.
    test_x: ``[n_test, T, F]`` float32.
    test_y: ``[n_test]`` int32 clean labels.
    channels: the signal channels.
    signs: ``[len(channels)]`` the burst's sign on each signal channel.
    onsets_pool, onsets_test: the burst's first step in each series.
  """

  pool_x: np.ndarray
  pool_y: np.ndarray
  pool_y_clean: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  channels: np.ndarray
  signs: np.ndarray
  onsets_pool: np.ndarray
  onsets_test: np.ndarray


def template(length: int = BURST) -> np.ndarray:
  """The burst's shape: a half-sine bump, ``[length]`` float32."""
  return np.sin(np.pi * (np.arange(length) + 0.5) / length).astype(np.float32)


def _series(rng, n, length, features, channels, signs, amplitude):
  y = rng.permutation(np.arange(n) % 2).astype(np.int32)
  x = rng.standard_normal((n, length, features), dtype=np.float32)
  onsets = rng.integers(0, length - BURST + 1, size=n)
  # Class 1 carries the bump, class 0 its negation: same energy, same channels.
  burst_NL = amplitude * np.where(y == 1, 1.0, -1.0)[:, None] * template()[None, :]
  steps_NL = onsets[:, None] + np.arange(BURST)
  for k, s in zip(channels, signs, strict=True):
    x[np.arange(n)[:, None], steps_NL, k] += s * burst_NL
  return x, y, onsets


def generate_task(
  data_seed: int = 0,
  *,
  n_pool: int = 100,
  n_test: int = 500,
  length: int = 100,
  features: int = 20,
  label_noise: float = 0.1,
  amplitude: float = AMPLITUDE,
) -> SyntheticTask:
  """Generates the pool and the test set from ``data_seed`` (see the module doc)."""
  for name, value, low in (
    ("n_pool", n_pool, 2),
    ("n_test", n_test, 1),
    ("length", length, BURST),
    ("features", features, SIGNAL_CHANNELS),
  ):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
  if not amplitude > 0.0:
    raise ValueError(f"amplitude must be > 0, got {amplitude!r}")
  if not 0.0 <= label_noise < 0.5:
    raise ValueError(f"label_noise must be in [0, 0.5), got {label_noise!r}")
  if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
    raise ValueError(f"data_seed must be an int >= 0, got {data_seed!r}")

  task = np.random.default_rng([data_seed, _TASK])
  channels = np.sort(task.choice(features, SIGNAL_CHANNELS, replace=False))
  signs = task.choice(np.array([-1.0, 1.0], np.float32), SIGNAL_CHANNELS)

  pool = np.random.default_rng([data_seed, _POOL])
  pool_x, pool_y_clean, onsets_pool = _series(
    pool, n_pool, length, features, channels, signs, amplitude
  )
  flip = pool.choice(n_pool, round(label_noise * n_pool), replace=False)
  pool_y = pool_y_clean.copy()
  pool_y[flip] = 1 - pool_y[flip]

  test = np.random.default_rng([data_seed, _TEST])
  test_x, test_y, onsets_test = _series(test, n_test, length, features, channels, signs, amplitude)
  return SyntheticTask(
    pool_x, pool_y, pool_y_clean, test_x, test_y, channels, signs, onsets_pool, onsets_test
  )


def make_synthetic(
  seed: int, *, val_fraction: float = 0.3, data_seed: int = 0, name: str = "synthetic", **task: Any
) -> Dataset:
  """The synthetic dataset, its pool split into train/val by ``seed``.

  Args:
    seed: picks which pool examples go to validation (not the task itself).
    val_fraction: share of the pool held out for validation, in ``(0, 1)``.
    data_seed: generates the task; fixed by default so all runs share it.
    name: one of ``NAMED``, whose keywords ``task`` overrides.
    **task: ``generate_task``'s keywords: ``n_pool`` (the official train
      split, train + val), ``n_test``, ``length`` (``T``), ``features``
      (``F``), ``label_noise`` (the fraction of pool labels flipped),
      ``amplitude`` (the burst's peak, in noise standard deviations).

  Returns:
    A ``Dataset`` named ``name`` with ``classes == ("0", "1")`` and no
    lengths (every series has ``length`` steps).
  """
  val_fraction = check_val_fraction(val_fraction)
  generated = generate_task(data_seed, **{**NAMED[name], **task})
  pool = Split(generated.pool_x, generated.pool_y)
  train_idx, val_idx = stratified_split(generated.pool_y, val_fraction, seed)
  return Dataset(
    name=name,
    train=pool.subset(train_idx),
    val=pool.subset(val_idx),
    test=Split(generated.test_x, generated.test_y),
    classes=("0", "1"),
  )
