"""The dropout placements and ``DropoutConfig``, the rates of a model's dropout.

Every placement is declared once, in ``REGISTRY`` (its name, where it acts,
whether it can be time-locked, whether only language models have it, and a
fixed mask-stream id); ``DropoutConfig``'s fields, its validation, the
command-line flags, the masks' keys (``masks.mask_key``) and the report's
labels all derive from it. The placements:

* ``input``, ``between``, ``output``: on the features (or embeddings) before
  the first layer, between layers, and on the last layer's output; a fresh
  mask per step or one per sequence (``time_locked``).
* ``recurrent``: a time-locked mask on ``h_{t-1}`` inside the recurrence
  (Gal & Ghahramani, 2016), one mask per layer and sequence.
* ``weight``: DropConnect on the recurrent kernel ``W_hh`` (Merity et al.,
  2018), one mask per layer and forward pass, shared by the batch.
* ``embedding``: whole-word dropout for language models: a word's embedding
  row is dropped for the whole batch (Gal & Ghahramani, 2016).
* ``zoneout_h``, ``zoneout_c``: zoneout (Krueger et al., 2017): each unit of
  h (or c) keeps its previous value with this probability; not inverted
  dropout, and at evaluation the expectation is used (the only placement
  that acts with ``train=False``).
* ``semeniuta``: dropout on the cell update g only (Semeniuta et al., 2016,
  "recurrent dropout without memory loss"), per step or time-locked.
* ``rnndrop``: one mask per sequence on the cell state c (Moon et al.,
  2015); see ``fused.py`` for its scaling.

``per_gate`` draws the masks on a layer's input (``input``, ``between``) and
on ``h_{t-1}`` (``recurrent``) once per gate: each of the four gates sees its
own dropped copy, as in Gal & Ghahramani's (2016) "untied weights" LSTM. With
one mask shared by the gates (the default), a dropped unit is hidden from the
whole layer; with one per gate, from all four gates only with probability
``rate**4``.

Rates may be Python floats (checked: ``0 <= rate < 1``; a rate of exactly 0
compiles to nothing) or JAX scalars, so a jitted step can take rates as traced
arguments and compile once for a whole grid of rates. ``DropoutConfig`` is a
pytree whose leaves are the rates. The dropout of a group of runs trained
together that differ in locking or ``per_gate`` is a ``groups.GroupDropout``.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Annotated, Any

import jax
import jax.numpy as jnp
from typing_extensions import Doc


@dataclasses.dataclass(frozen=True)
class Placement:
  """One place a dropout mask can act, declared once (``REGISTRY``).

  Attributes:
    name: the ``DropoutConfig`` field of its rate (and ``--dropout.<name>``).
    stream: a fixed id that separates its masks' keys from every other
      placement's (``mask_key``); never reused, never a tuple position, so
      adding a placement never changes an existing one's masks.
    acts_on: where the mask acts (the field's help text).
    lockable: ``time_locked`` may name it (one mask per sequence instead of
      one per step).
    lm_only: only language models have it (``SequenceClassifier`` refuses it).
    in_cell: it acts inside the recurrence (``fused.py``).
  """

  name: str
  stream: int
  acts_on: str
  lockable: bool = False
  lm_only: bool = False
  in_cell: bool = False


REGISTRY: tuple[Placement, ...] = (
  Placement("input", 0, "the features (or embeddings) entering the first layer", lockable=True),
  Placement("between", 1, "each layer's output sequence before the next layer", lockable=True),
  Placement("output", 2, "the last layer's output before the head (or softmax)", lockable=True),
  Placement(
    "recurrent", 3, "h_{t-1} inside each layer, one mask per sequence (Gal & Ghahramani, 2016)",
    in_cell=True,
  ),
  Placement(
    "weight", 4, "each layer's recurrent kernel W_hh, one mask per pass (DropConnect)",
    in_cell=True,
  ),
  Placement("embedding", 5, "whole words: an embedding row for the whole batch", lm_only=True),
  Placement(
    "zoneout_h", 6,
    "h by zoneout (Krueger et al., 2017): each unit keeps h_{t-1} with this probability; the "
    "expectation at evaluation",
    in_cell=True,
  ),
  Placement(
    "zoneout_c", 7, "the cell state c by zoneout, as zoneout_h (Krueger et al., 2017)",
    in_cell=True,
  ),
  Placement(
    "semeniuta", 8, "the cell update g only (Semeniuta et al., 2016)", lockable=True,
    in_cell=True,
  ),
  Placement(
    "rnndrop", 9, "the cell state c, one mask per sequence (Moon et al., 2015, RNNDrop)",
    in_cell=True,
  ),
)  # fmt: skip

#: The stack's placements between layers, in stack order (the over-fitting
#: grid's settings, and what ``time_locked=True`` locks).
PLACEMENTS: tuple[str, ...] = tuple(p.name for p in REGISTRY if not p.in_cell and not p.lm_only)
#: Every rate field of ``DropoutConfig``, in registry order.
RATE_FIELDS: tuple[str, ...] = tuple(p.name for p in REGISTRY)
#: Placements ``time_locked`` may name.
LOCKABLE: tuple[str, ...] = tuple(p.name for p in REGISTRY if p.lockable)
#: The key stream of each placement's masks: ``mask_key``.
MASK_STREAMS: dict[str, int] = {p.name: p.stream for p in REGISTRY}
BY_NAME: dict[str, Placement] = {p.name: p for p in REGISTRY}
assert len(set(MASK_STREAMS.values())) == len(REGISTRY), "a stream id is used twice"


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


class _DropoutConfigMethods:
  """The methods of ``DropoutConfig``, whose fields come from ``REGISTRY``."""

  def __post_init__(self):
    for name in RATE_FIELDS:
      check_rate(name, getattr(self, name))
    locked = self.time_locked
    if isinstance(locked, bool):
      locked = PLACEMENTS if locked else ()
    elif isinstance(locked, str):
      locked = (locked,)
    unknown = sorted(set(locked) - set(LOCKABLE))
    if unknown:
      raise ValueError(
        f"unknown placement(s) {unknown} in time_locked; valid placements are "
        f"{list(LOCKABLE)} (or pass True/False for {'/'.join(PLACEMENTS)}/none)"
      )
    # Normalised to a tuple in registry order (hashable, JSON- and CLI-friendly).
    object.__setattr__(self, "time_locked", tuple(p for p in LOCKABLE if p in locked))
    if not isinstance(self.per_gate, bool):
      raise ValueError(f"per_gate must be True or False, got {self.per_gate!r}")

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

  def is_time_locked(self, placement: str) -> Any:
    """Whether ``placement`` draws one mask per sequence: a bool, or (in a group of
    runs that differ in it, ``GroupDropout``) each run's traced flag."""
    return placement in self.time_locked

  def is_per_gate(self) -> Any:
    """Whether the masks on a layer's input and on ``h_{t-1}`` differ by gate: a bool,
    or (in a group of runs that differ in it, ``GroupDropout``) each run's traced flag.
    Where this is not False the masks have a gate axis (``gate_mask``)."""
    return self.per_gate

  def member(self, run: DropoutConfig) -> DropoutConfig:
    """``run``'s dropout in the form of a group whose dropout is this one (``union``):
    here ``run`` itself; a ``GroupDropout`` adds its locking flags."""
    return run

  def lm_only_on(self) -> tuple[str, ...]:
    """Language-model placements with a concrete non-zero rate (a classifier refuses them)."""
    return tuple(
      p.name
      for p in REGISTRY
      if p.lm_only and _is_concrete(getattr(self, p.name)) and float(getattr(self, p.name))
    )

  def active(self, *, lm: bool = True) -> tuple[str, ...]:
    """The placements whose rate is not a concrete zero (those of language models only
    when ``lm``)."""
    return tuple(
      p.name for p in REGISTRY if (lm or not p.lm_only) and not is_off(getattr(self, p.name))
    )

  def with_rates_of(self, rates: DropoutConfig) -> DropoutConfig:
    """``rates``' values (traced ones included) at the placements this config uses, a
    concrete zero elsewhere (so those compile to nothing); ``time_locked`` is this one's."""
    active = self.active()
    values = {n: getattr(rates, n) if n in active else 0.0 for n in RATE_FIELDS}
    return self.tree_unflatten(self._static(), tuple(values.values()))

  def replace(self, **changes) -> DropoutConfig:
    return dataclasses.replace(self, **changes)

  def as_arrays(self, dtype=jnp.float32) -> DropoutConfig:
    """The same config with every rate a JAX scalar (for traced rates).

    A step jitted on ``cfg.as_arrays()`` compiles once for all rate values;
    only which placements exist and ``time_locked`` are static.
    """
    return self.replace(**{n: jnp.asarray(getattr(self, n), dtype) for n in RATE_FIELDS})

  # Pytree protocol: the rates are leaves, ``time_locked`` and ``per_gate`` are static.
  def _static(self) -> tuple:
    return self.time_locked, self.per_gate

  def tree_flatten(self):
    return tuple(getattr(self, n) for n in RATE_FIELDS), self._static()

  @classmethod
  def tree_unflatten(cls, static, rates):
    obj = object.__new__(cls)  # skip validation: leaves may be tracers or sentinels
    for name, rate in zip(RATE_FIELDS, rates, strict=True):
      object.__setattr__(obj, name, rate)
    object.__setattr__(obj, "time_locked", static[0])
    object.__setattr__(obj, "per_gate", static[1])
    return obj


_LOCKED_HELP = (
  "which placements draw one mask per sequence, shared by all time steps (variational "
  f"dropout), instead of a fresh mask at every step: any of {', '.join(LOCKABLE)}; True means "
  f"{', '.join(PLACEMENTS)}, False none"
)

_PER_GATE_HELP = (
  "draw the masks on each layer's input (input, between) and on h_{t-1} (recurrent) once per "
  "gate, as Gal & Ghahramani's untied-weights LSTM, instead of one mask shared by the four "
  "gates"
)

DropoutConfig = jax.tree_util.register_pytree_node_class(
  dataclasses.make_dataclass(
    "DropoutConfig",
    [(p.name, Annotated[float, Doc(f"Rate on {p.acts_on}.")], 0.0) for p in REGISTRY]
    + [
      ("time_locked", Annotated[bool | tuple[str, ...], Doc(_LOCKED_HELP)], False),
      ("per_gate", Annotated[bool, Doc(_PER_GATE_HELP)], False),
    ],
    bases=(_DropoutConfigMethods,),
    frozen=True,
  )
)
DropoutConfig.__module__ = __name__


DropoutConfig.__doc__ = f"""Dropout rates for an ``LSTMStack`` and the models built on it.

  One rate per placement of ``REGISTRY`` (in this order, the first three
  positional), each ``0 <= rate < 1``, and ``time_locked``. Rates are floats,
  or JAX scalars inside a jitted function (see ``as_arrays``).

  Attributes:
{chr(10).join(f"    {p.name}: rate on {p.acts_on}." for p in REGISTRY)}
    time_locked: {_LOCKED_HELP}.

  Example::

    DropoutConfig(output=0.3)                       # the seed's Example 2
    DropoutConfig(input=0.5, between=0.5, output=0.5)   # Zaremba et al.
    DropoutConfig(input=0.35, between=0.2, output=0.4, recurrent=0.2,
                  time_locked=True)                 # Gal & Ghahramani
    DropoutConfig(zoneout_h=0.05, zoneout_c=0.5)    # Krueger et al.

  Raises:
    ValueError: a rate outside ``[0, 1)``, or a placement in ``time_locked``
      that cannot be time-locked.
  """
