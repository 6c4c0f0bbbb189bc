"""Dropout configuration and PRNG-keyed mask sampling.

Every mask in the library comes from here. A mask is a boolean *keep* array;
applying it is inverted dropout: kept units become ``x / (1 - rate)``, dropped
units become 0, so the expected activation is unchanged and evaluation needs
no rescaling.

Placements (where a mask acts in an ``LSTMStack``):

* ``input``: on the features (or embeddings) before the first LSTM layer.
* ``between``: on each layer's output sequence before the next LSTM layer.
* ``output``: on the last LSTM layer's output, before the dense head.

Extensions:

* ``recurrent``: a time-locked mask on ``h_{t-1}`` inside the recurrence
  (Gal & Ghahramani, 2016), one mask per layer and sequence.
* ``weight``: DropConnect on the recurrent kernel ``W_hh`` (Merity et al.,
  2018), one mask per layer and forward pass, shared by the batch.
* ``embedding``: whole-word dropout for language models: a word's embedding
  row is dropped for the whole batch (Gal & Ghahramani, 2016).

Rates may be Python floats (checked: ``0 <= rate < 1``; a rate of exactly 0
compiles to nothing) or JAX scalars, so a jitted step can take rates as traced
arguments and compile once for a whole grid of rates. ``DropoutConfig`` is a
pytree whose leaves are the six rates.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

#: Placements of the non-recurrent dropout masks, in stack order.
PLACEMENTS: tuple[str, ...] = ("input", "between", "output")
#: Every rate field of ``DropoutConfig``.
RATE_FIELDS: tuple[str, ...] = (*PLACEMENTS, "recurrent", "weight", "embedding")

# Stable integers that separate the key streams of the masks: a mask's key is
# fold_in(fold_in(key, MASK_STREAMS[kind]), layer), so no two kinds or layers
# ever share a mask.
MASK_STREAMS: dict[str, int] = {name: i for i, name in enumerate(RATE_FIELDS)}


def _is_concrete(rate: Any) -> bool:
  return isinstance(rate, numbers.Real) and not isinstance(rate, bool)


def is_off(rate: Any) -> bool:
  """True when ``rate`` is a concrete zero, so the mask can be skipped."""
  return _is_concrete(rate) and float(rate) == 0.0


def check_rate(name: str, rate: Any) -> None:
  """Raises ``ValueError`` unless ``rate`` is a traced value or in [0, 1)."""
  if isinstance(rate, jax.Array) and not isinstance(rate, jax.core.Tracer):
    if rate.ndim != 0:
      raise ValueError(f"dropout rate {name!r} must be a scalar, got shape {rate.shape}")
    rate = float(rate)
  if isinstance(rate, jax.core.Tracer):
    return
  if not _is_concrete(rate):
    raise ValueError(f"dropout rate {name!r} must be a number in [0, 1), got {rate!r}")
  if not 0.0 <= float(rate) < 1.0:
    raise ValueError(
      f"dropout rate {name!r} must satisfy 0 <= rate < 1, got {rate}; "
      "a rate of 1 would drop every unit (use 0 to switch dropout off)"
    )


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class DropoutConfig:
  """Dropout rates for an ``LSTMStack`` and the models built on it.

  Rates are floats, or JAX scalars inside a jitted function (see
  ``as_arrays``).

  Attributes:
    input: rate on the features (or embeddings) entering the first layer.
    between: rate on each layer's output sequence before the next layer.
    output: rate on the last layer's output before the dense head.
    recurrent: rate of a time-locked mask on ``h_{t-1}`` inside each layer.
    weight: DropConnect rate on each layer's recurrent kernel ``W_hh``.
    embedding: whole-word dropout rate (``LanguageModel`` only).
    time_locked: which of ``input``/``between``/``output`` draw one mask per
      sequence, shared by all time steps (variational dropout), instead of a
      fresh mask at every step. ``True`` means all three, ``False`` none, or
      give a collection of placement names.

  Example::

    DropoutConfig(output=0.3)                       # the seed's Example 2
    DropoutConfig(input=0.5, between=0.5, output=0.5)   # Zaremba et al.
    DropoutConfig(input=0.35, between=0.2, output=0.4, recurrent=0.2,
                  time_locked=True)                 # Gal & Ghahramani

  Raises:
    ValueError: a rate outside ``[0, 1)``, or an unknown placement name in
      ``time_locked``.
  """

  input: float = 0.0
  between: float = 0.0
  output: float = 0.0
  recurrent: float = 0.0
  weight: float = 0.0
  embedding: float = 0.0
  time_locked: bool | tuple[str, ...] = False

  def __post_init__(self):
    for name in RATE_FIELDS:
      check_rate(name, getattr(self, name))
    locked = self.time_locked
    if isinstance(locked, bool):
      locked = PLACEMENTS if locked else ()
    elif isinstance(locked, str):
      locked = (locked,)
    unknown = sorted(set(locked) - set(PLACEMENTS))
    if unknown:
      raise ValueError(
        f"unknown placement(s) {unknown} in time_locked; valid placements are "
        f"{list(PLACEMENTS)} (or pass True/False for all/none)"
      )
    # Normalised to a tuple in placement order (hashable, JSON- and CLI-friendly).
    object.__setattr__(self, "time_locked", tuple(p for p in PLACEMENTS if p in locked))

  @classmethod
  def from_placements(cls, rates: dict[str, Any], **kwargs) -> DropoutConfig:
    """Builds a config from ``{placement: rate}``, rejecting unknown names.

    Args:
      rates: maps names from ``RATE_FIELDS`` to rates.
      **kwargs: other fields, e.g. ``time_locked=True``.
    """
    unknown = sorted(set(rates) - set(RATE_FIELDS))
    if unknown:
      raise ValueError(
        f"unknown dropout placement(s) {unknown}; valid names are {list(RATE_FIELDS)}"
      )
    return cls(**rates, **kwargs)

  def is_time_locked(self, placement: str) -> bool:
    return placement in self.time_locked

  def replace(self, **changes) -> DropoutConfig:
    return dataclasses.replace(self, **changes)

  def as_arrays(self, dtype=jnp.float32) -> DropoutConfig:
    """The same config with every rate a JAX scalar (for traced rates).

    A step jitted on ``cfg.as_arrays()`` compiles once for all rate values;
    only which placements exist and ``time_locked`` are static.
    """
    return self.replace(**{n: jnp.asarray(getattr(self, n), dtype) for n in RATE_FIELDS})

  # Pytree protocol: the rates are leaves, ``time_locked`` is static.
  def tree_flatten(self):
    return tuple(getattr(self, n) for n in RATE_FIELDS), self.time_locked

  @classmethod
  def tree_unflatten(cls, time_locked, rates):
    obj = object.__new__(cls)  # skip validation: leaves may be tracers or sentinels
    for name, rate in zip(RATE_FIELDS, rates, strict=True):
      object.__setattr__(obj, name, rate)
    object.__setattr__(obj, "time_locked", time_locked)
    return obj


def mask_key(key: Array, kind: str, layer: int = 0) -> Array:
  """The key of the mask of ``kind`` (a ``RATE_FIELDS`` name) at ``layer``."""
  return jax.random.fold_in(jax.random.fold_in(key, MASK_STREAMS[kind]), layer)


def keep_mask(key: Array, rate: Any, shape: tuple[int, ...]) -> Array:
  """A boolean keep-mask: each entry is True with probability ``1 - rate``."""
  return jax.random.bernoulli(key, 1.0 - jnp.asarray(rate, jnp.float32), shape)


def sequence_mask(
  key: Array, rate: Any, shape_TBF: tuple[int, int, int], time_locked: bool
) -> Array:
  """Keep-mask for a time-major ``[T, B, F]`` block.

  Per-step masks are drawn for the whole block in one call; a time-locked
  mask is ``[1, B, F]`` and broadcasts over time.
  """
  T, B, F = shape_TBF
  return keep_mask(key, rate, (1, B, F) if time_locked else (T, B, F))


def apply_mask(x: Array, keep: Array, rate: Any) -> Array:
  """Inverted dropout: ``x / (1 - rate)`` where ``keep``, else 0."""
  scaled = x / (1.0 - jnp.asarray(rate, x.dtype))
  return jnp.where(keep, scaled, jnp.zeros((), x.dtype))


def dropout(x: Array, rate: Any, key: Array | None, *, train: bool) -> Array:
  """Functional inverted dropout with a fresh mask of ``x``'s shape.

  The identity when ``train`` is False or ``rate`` is a concrete 0.

  Raises:
    ValueError: ``train`` with a non-zero rate but no key.
  """
  check_rate("rate", rate)
  if not train or is_off(rate):
    return x
  if key is None:
    raise ValueError("dropout with train=True and a non-zero rate needs a PRNG key")
  return apply_mask(x, keep_mask(key, rate, x.shape), rate)
