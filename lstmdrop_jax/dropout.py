"""Dropout configuration and PRNG-keyed mask sampling.

Every mask in the library comes from here. A mask is a boolean *keep* array;
applying it is inverted dropout: kept units become ``x / (1 - rate)``, dropped
units become 0, so the expected activation is unchanged and evaluation needs
no rescaling.

Every placement is declared once, in ``REGISTRY`` (its name, where it acts,
whether it can be time-locked, whether only language models have it, and a
fixed mask-stream id); ``DropoutConfig``'s fields, its validation, the
command-line flags, the masks' keys and the report's labels all derive from
it. The placements:

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

Every mask with a batch axis is drawn by hashing each entry's index with two
seeds from the mask's key (``keep_mask16``), a twelfth of the time of threefry
bits on a CPU; the masks without one (``weight``, ``embedding``) are threefry
bits (``keep_mask``). A step run per device on its rows of the batch draws its
rows of the whole batch's masks (``batch_shard``).

Rates may be Python floats (checked: ``0 <= rate < 1``; a rate of exactly 0
compiles to nothing) or JAX scalars, so a jitted step can take rates as traced
arguments and compile once for a whole grid of rates. ``DropoutConfig`` is a
pytree whose leaves are the rates.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import jax
import jax.numpy as jnp
from typing_extensions import Doc

Array = jax.Array


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

  @classmethod
  def union(cls, configs: Sequence[DropoutConfig]) -> DropoutConfig:
    """A config that uses every placement any of ``configs`` uses (at its largest rate):
    the placements of a group of runs trained together. Where the runs differ in
    ``time_locked``, a ``GroupDropout``: those placements take each run's flag."""
    rates = {n: max(float(getattr(c, n)) for c in configs) for n in RATE_FIELDS}
    every = [p for p in LOCKABLE if all(p in c.time_locked for c in configs)]
    some = [p for p in LOCKABLE if p not in every and any(p in c.time_locked for c in configs)]
    gates = {c.per_gate for c in configs}
    if not some and len(gates) == 1:
      return DropoutConfig(**rates, time_locked=tuple(every), per_gate=gates.pop())
    return GroupDropout(
      **rates,
      time_locked=tuple(every),
      per_gate=True in gates,
      per_run=tuple(some),
      locks=(False,) * len(some),
      gate_flag=False if len(gates) > 1 else None,
    )

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


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class GroupDropout(DropoutConfig):
  """The dropout of a group of runs trained together that differ in which placements
  are time-locked, or in ``per_gate`` (``DropoutConfig.union`` makes it).

  ``time_locked`` names what every run locks; each placement of ``per_run`` is
  locked or not by the run's own flag in ``locks``, a leaf like the rates, so the
  runs share one compiled step. Such a placement draws both masks and keeps one
  per run (``sequence_mask``), so a run draws exactly the masks it draws alone.
  Likewise ``gate_flag`` (None when the runs agree on ``per_gate``) is each run's
  ``per_gate`` as a leaf; the group's masks then have a gate axis, and a run
  without per-gate masks repeats its one mask over it (``gate_mask``).
  """

  per_run: tuple[str, ...] = ()
  locks: tuple[Any, ...] = ()
  gate_flag: Any = None

  def __post_init__(self):
    super().__post_init__()
    bad = [p for p in self.per_run if p not in LOCKABLE or p in self.time_locked]
    if bad or len(self.locks) != len(self.per_run):
      raise ValueError(
        f"GroupDropout: per_run {self.per_run} must name lockable placements not in "
        f"time_locked, with one lock each (got {len(self.locks)})"
      )
    if self.gate_flag is not None and not self.per_gate:
      raise ValueError("GroupDropout: a per-run gate_flag needs per_gate=True (the gate axis)")
    # Static: whether gate_flag is a leaf (its value may be None in a tree of non-arrays).
    object.__setattr__(self, "_gated", self.gate_flag is not None)

  def is_time_locked(self, placement: str) -> Any:
    if placement in self.per_run:
      return self.locks[self.per_run.index(placement)]
    return placement in self.time_locked

  def is_per_gate(self) -> Any:
    return self.gate_flag if self._gated else self.per_gate

  def _flags(self) -> tuple:
    return (*self.locks, *((self.gate_flag,) if self._gated else ()))

  def _with_flags(self, rates: DropoutConfig) -> GroupDropout:
    """This group's form of ``rates`` (a run's config, or a group's): its rates, and its
    locks and per-gate flag for the placements that are per run here."""
    values = [getattr(rates, n) for n in RATE_FIELDS]
    locks = [rates.is_time_locked(p) for p in self.per_run]
    gate = (rates.is_per_gate(),) if self._gated else ()
    return self.tree_unflatten(self._static(), (*values, *locks, *gate))

  def member(self, run: DropoutConfig) -> GroupDropout:
    return self._with_flags(run)

  def with_rates_of(self, rates: DropoutConfig) -> GroupDropout:
    active = self.active()
    out = self._with_flags(rates)
    for n in RATE_FIELDS:
      if n not in active:
        object.__setattr__(out, n, 0.0)
    return out

  def as_arrays(self, dtype=jnp.float32) -> GroupDropout:
    leaves, static = jax.tree.flatten(super().as_arrays(dtype))
    n = len(RATE_FIELDS)
    return jax.tree.unflatten(static, [*leaves[:n], *(jnp.asarray(f, bool) for f in leaves[n:])])

  def _static(self) -> tuple:
    return self.time_locked, self.per_gate, self.per_run, self._gated

  def tree_flatten(self):
    return (*(getattr(self, n) for n in RATE_FIELDS), *self._flags()), self._static()

  @classmethod
  def tree_unflatten(cls, static, leaves):
    time_locked, per_gate, per_run, gated = static
    n = len(RATE_FIELDS)
    obj = super().tree_unflatten((time_locked, per_gate), leaves[:n])
    object.__setattr__(obj, "per_run", per_run)
    object.__setattr__(obj, "locks", tuple(leaves[n : n + len(per_run)]))
    object.__setattr__(obj, "gate_flag", leaves[n + len(per_run)] if gated else None)
    object.__setattr__(obj, "_gated", gated)
    return obj


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


def mask_key(key: Array, kind: str, layer: int = 0) -> Array:
  """The key of the mask of ``kind`` (a ``REGISTRY`` name) at ``layer``:
  ``fold_in(fold_in(key, stream), layer)``, so no two placements or layers share a mask."""
  return jax.random.fold_in(jax.random.fold_in(key, MASK_STREAMS[kind]), layer)


_BATCH_SHARD: contextvars.ContextVar[tuple[Any, int] | None] = contextvars.ContextVar(
  "batch_shard", default=None
)


@contextlib.contextmanager
def batch_shard(index: Any, count: int) -> Iterator[None]:
  """Within it, the program holds block ``index`` (may be traced) of ``count`` equal
  blocks of the batch's rows, and every mask with a batch axis is those rows of the
  mask the whole batch draws: a step traced per device (``shard_map``) draws the
  masks that one device with the whole batch draws."""
  token = _BATCH_SHARD.set((index, count))
  try:
    yield
  finally:
    _BATCH_SHARD.reset(token)


def keep_mask(key: Array, rate: Any, shape: tuple[int, ...]) -> Array:
  """A boolean keep-mask: each entry is True with probability ``1 - rate`` (threefry
  bits): the masks without a batch axis (``weight``, ``embedding``)."""
  return jax.random.bernoulli(key, 1.0 - jnp.asarray(rate, jnp.float32), shape)


def _mix32(x: Array) -> Array:
  """``lowbias32`` (C. Wellons' hash prospector): a bijection of 32-bit integers
  whose every input bit flips each output bit with probability close to 1/2."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x21F0AAAD)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x735A2D97)
  return x ^ (x >> 15)


def _uniform16(key: Array, shape: tuple[int, ...], batch_axis: int | None = None) -> Array:
  """Uniform integers in ``[0, 2**16)``, one per entry of ``shape``.

  ``key`` gives two 32-bit seeds (one threefry draw); each entry is the top 16 bits
  of a keyed two-round hash of its index, ``mix(mix(i ^ s0) + s1)``. That costs a
  twelfth of the time of threefry bits for the same entries on a CPU, where the
  masks of ``[T, B, ...]`` blocks would otherwise be a seventh of a small model's
  step. Entries are independent for every statistic the masks are tested on
  (``tests/test_variants.py``); shapes are limited to ``2**32`` entries. Inside
  ``batch_shard`` only this program's rows are hashed: their indices are those of
  the whole batch's array.
  """
  s = jax.random.bits(key, (2,), jnp.uint32)
  shard = None if batch_axis is None else _BATCH_SHARD.get()
  if shard is None:
    i = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
  else:
    index, count = shard
    full = list(shape)
    full[batch_axis] *= count
    strides = [math.prod(full[d + 1 :]) for d in range(len(full))]
    first = jnp.asarray(index, jnp.uint32) * jnp.uint32(shape[batch_axis] * strides[batch_axis])
    iota = lambda d: jax.lax.broadcasted_iota(jnp.uint32, shape, d) * jnp.uint32(strides[d])
    i = sum((iota(d) for d in range(len(shape))), first)
  return _mix32(_mix32(i ^ s[0]) + s[1]) >> 16


def _threshold16(rate: Any) -> Array:
  return jnp.round(jnp.asarray(rate, jnp.float32) * 65536.0).astype(jnp.uint32)


def _once(mask: Array) -> Array:
  """``mask``, computed once: left to itself, XLA fuses the hash into every consumer
  (the forward pass and the backward pass each recompute it), which made a
  language model's step (ptb_small, CPU) 9% slower than with threefry bits."""
  return jax.lax.optimization_barrier(mask)


def keep_mask16(
  key: Array, rate: Any, shape: tuple[int, ...], *, batch_axis: int | None = None
) -> Array:
  """A keep-mask with a 16-bit draw per entry (``_uniform16``; the rate rounded to a
  multiple of 2**-16): every mask with a batch axis. ``batch_axis``: the axis of
  ``shape`` that runs over the batch (see ``batch_shard``)."""
  return _once(_uniform16(key, shape, batch_axis) >= _threshold16(rate))


def zone_mask(
  key: Array, rate: Any, shape: tuple[int, ...], *, batch_axis: int | None = None
) -> Array:
  """Zoneout's boolean keep-previous mask: each entry True with probability ``rate``
  (a 16-bit draw per entry, as ``keep_mask16``)."""
  return _once(_uniform16(key, shape, batch_axis) < _threshold16(rate))


def sequence_mask(
  key: Array,
  rate: Any,
  shape_TBF: tuple[int, ...],
  time_locked: Any,
  *,
  batch_axis: int = 1,
) -> Array:
  """Keep-mask for a time-major ``[T, B, F]`` block (or ``[T, B, ...]``).

  Per-step masks are drawn for the whole block in one call; a time-locked
  mask is ``[1, B, F]`` and broadcasts over time. ``time_locked`` may be a
  traced flag (``GroupDropout``): then the mask is ``[T, B, F]`` either way.
  Drawn with ``keep_mask16``; ``batch_axis``: where the batch is in ``shape_TBF``.
  """
  T, *rest = shape_TBF
  draw = lambda steps: keep_mask16(key, rate, (steps, *rest), batch_axis=batch_axis)
  if isinstance(time_locked, bool):
    return draw(1 if time_locked else T)
  # A run's flag (``GroupDropout``): both masks, from the key either draws alone.
  return jnp.where(time_locked, draw(1), draw(T))


#: The gates of an LSTM layer (the blocks of its 4H axis, in order i, f, g, o).
GATES = 4


def gate_mask(
  key: Array, rate: Any, shape_TBF: tuple[int, int, int], time_locked: Any, per_gate: Any
) -> Array:
  """Keep-mask for a layer input ``[T, B, F]`` as its four gates see it, gate-major:
  ``[4, T, B, F]`` (``[4, 1, B, F]`` time-locked).

  ``per_gate`` True draws one mask per gate; False draws the ``[T, B, F]`` mask of
  ``sequence_mask`` (the same bits) and repeats it over the gates; a traced flag
  (``GroupDropout``) draws both and keeps one, so a run draws what it draws alone.
  """
  T, B, F = shape_TBF
  shared = sequence_mask(key, rate, shape_TBF, time_locked)[None]
  if per_gate is False:
    return jnp.broadcast_to(shared, (GATES, *shared.shape[1:]))
  own = sequence_mask(key, rate, (T, GATES, B, F), time_locked, batch_axis=2)
  own = own.transpose(1, 0, 2, 3)
  return own if per_gate is True else jnp.where(per_gate, own, shared)


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
