"""PRNG-keyed mask sampling and inverted dropout.

Every mask in the library comes from here. A mask is a boolean *keep* array;
applying it is inverted dropout: kept units become ``x / (1 - rate)``, dropped
units become 0, so the expected activation is unchanged and evaluation needs
no rescaling. Each placement's masks have their own key (``mask_key``, from
the placement's stream in ``placements.REGISTRY``).

Every mask with a batch axis is drawn by hashing each entry's index with two
seeds from the mask's key (``keep_mask16``), a twelfth of the time of threefry
bits on a CPU; the masks without one (``weight``, ``embedding``) are threefry
bits (``keep_mask``). A step run per device on its rows of the batch draws its
rows of the whole batch's masks (``batch_shard``).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp

from lstmdrop_jax.placements import MASK_STREAMS, check_rate, is_off

Array = jax.Array


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
