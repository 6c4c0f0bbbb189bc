"""A stack of LSTM layers with dropout at every placement of ``DropoutConfig``.

The layers (``layer.py``) run time-major; the stack takes batch-major inputs
(``[B, T, F]``), draws every mask from one key folded in by placement and layer
(``masks.py``), and applies the input, between and output placements around the
layers and the recurrent, weight and in-cell ones inside them. A carry is a tuple over
layers of ``(h, c)`` pairs, each ``[B, H]`` float32.

Like ``flax.linen.RNN``, the stack returns its outputs alone, or ``(carry, outputs)``
with ``return_carry=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstmdrop_jax import masks
from lstmdrop_jax.layer import IMPLS, LayerSettings, LSTMLayer, state_dtype, symmetric_uniform
from lstmdrop_jax.placements import DropoutConfig, is_off

Array = jax.Array
Carry = tuple[tuple[Array, Array], ...]


class LSTMStack(LayerSettings, kw_only=True):
  """A stack of LSTM layers with dropout at the input, between layers and output.

  Call signature: ``y = stack(x_BTF, lengths=None, carry=None, train=False,
  return_sequences=True)``, or ``carry, y = stack(..., return_carry=True)``.

  Args (of ``__call__``):
    x_BTF: ``[B, T, F]`` float inputs.
    lengths: optional ``[B]`` int valid lengths (``0 <= lengths <= T``).
      Steps at and after a sequence's length leave its carry unchanged and
      emit zeros. Checked when concrete (not under ``jit``).
    carry: optional initial carry (tuple over layers of ``(h, c)``, each
      ``[B, H]``); zeros when None. See ``initialize_carry``.
    train: apply dropout. With any non-zero rate this needs a PRNG key:
      ``stack.apply(variables, x, train=True, rngs={'dropout': key})``.
      Every mask is drawn from that key, folded in by placement and layer, so
      no two masks coincide and the same key gives the same masks.
    return_sequences: if True return ``[B, T, H]``; else only the last
      valid step's ``[B, H]`` (the classifier's read-out), with the output
      dropout drawn for that step only.
    return_carry: also return the final carry, first (None: the attribute).

  Returns:
    The outputs (float32, after the output placement's dropout), or ``(carry,
    outputs)`` with ``return_carry``. ``train=False`` applies no dropout at all.

  Attributes (keyword-only):
    hidden: units per layer H (> 0).
    layers: number of layers (>= 1).
    dropout: a ``DropoutConfig``; ``embedding`` is ignored here.
    return_carry: the default of ``__call__``'s ``return_carry`` (False).
    unroll: time steps per scan iteration (>= 1); None (the default) picks
      ``platform.default_unroll()``: 8 on accelerators, 1 on CPUs.
    compute_dtype: matmul dtype, ``jnp.float32`` or ``jnp.bfloat16``.
    impl: ``"fused"`` (default) or ``"scan"``, see ``IMPLS``.
    kernel_init, recurrent_init, bias_init, forget_bias: initialisation.
  """

  layers: int = 1
  dropout: DropoutConfig = DropoutConfig()
  return_carry: bool = False

  def __post_init__(self):
    check_stack_args(self.hidden, self.layers, self.unroll, self.dropout, self.compute_dtype)
    if self.impl not in IMPLS:
      raise ValueError(f"impl must be one of {list(IMPLS)}, got {self.impl!r}")
    super().__post_init__()

  def initialize_carry(self, batch_size: int) -> Carry:
    """Zero carry for ``batch_size`` sequences."""
    zeros = lambda: jnp.zeros((batch_size, self.hidden), state_dtype(self.compute_dtype))
    # Separate buffers, so a donated state never holds one array twice.
    return tuple((zeros(), zeros()) for _ in range(self.layers))

  @nn.compact
  def __call__(
    self,
    x_BTF: Array,
    *,
    lengths: Array | None = None,
    carry: Carry | None = None,
    train: bool = False,
    return_sequences: bool = True,
    return_carry: bool | None = None,
  ) -> Array | tuple[Carry, Array]:
    if x_BTF.ndim != 3:
      raise ValueError(
        f"LSTMStack expects inputs of shape [batch, time, features], got shape "
        f"{tuple(x_BTF.shape)} (rank {x_BTF.ndim}); add a feature axis of size 1 "
        "for univariate series"
      )
    B, T, _ = x_BTF.shape
    valid_TB = None if lengths is None else _valid_steps(lengths, B, T)
    carry = self.initialize_carry(B) if carry is None else _check_carry(carry, self, B)
    cfg = self.dropout
    key = self._dropout_key() if train and cfg.active(lm=False) else None

    x_TBF = _drop_sequence(cfg, key, jnp.swapaxes(x_BTF, 0, 1), "input", 0)
    new_carry = []
    for layer in range(self.layers):
      if layer > 0:
        x_TBF = _drop_sequence(cfg, key, x_TBF, "between", layer)
      masks = _layer_masks(cfg, key, layer, (T, B, self.hidden), state_dtype(self.compute_dtype))
      layer_carry, x_TBF = LSTMLayer(**self.layer_settings(), name=f"layer_{layer}")(
        x_TBF, carry[layer], valid_TB=valid_TB, weight_rate=cfg.weight, return_carry=True,
        **masks,
      )  # fmt: skip
      new_carry.append(layer_carry)

    if return_sequences:
      y = jnp.swapaxes(_drop_sequence(cfg, key, x_TBF, "output", self.layers), 0, 1)
    else:
      # The top layer's final h is its output at the last valid step: padded steps
      # leave the carry unchanged.
      y = _drop_last(cfg, key, new_carry[-1][0], self.layers)
    if self.return_carry if return_carry is None else return_carry:
      return tuple(new_carry), y
    return y

  def _dropout_key(self) -> Array:
    if not self.has_rng("dropout"):
      raise ValueError(
        "train=True with non-zero dropout needs a PRNG key: call "
        "model.apply(variables, x, train=True, rngs={'dropout': key}), or pass "
        "train=False to evaluate"
      )
    return self.make_rng("dropout")


def _drop_sequence(cfg: DropoutConfig, key: Array | None, x_TBF: Array, placement, layer):
  """``x_TBF`` after ``placement``'s dropout (``key`` None: none); with per-gate masks on a
  layer's input, the copies the four gates see, ``[4, T, B, F]``."""
  rate = getattr(cfg, placement)
  if key is None or is_off(rate):
    return x_TBF
  mkey, locked = masks.mask_key(key, placement, layer), cfg.is_time_locked(placement)
  if cfg.per_gate and placement != "output":
    keep = masks.gate_mask(mkey, rate, x_TBF.shape, locked, cfg.is_per_gate())
    return masks.apply_mask(x_TBF[None], keep, rate)
  return masks.apply_mask(x_TBF, masks.sequence_mask(mkey, rate, x_TBF.shape, locked), rate)


def _drop_last(cfg: DropoutConfig, key: Array | None, last_BH: Array, layer: int) -> Array:
  """The last valid step's output after the output placement's dropout."""
  if key is None or is_off(cfg.output):
    return last_BH
  okey = masks.mask_key(key, "output", layer)
  keep = masks.keep_mask16(okey, cfg.output, last_BH.shape, batch_axis=0)
  return masks.apply_mask(last_BH, keep, cfg.output)


def _layer_masks(cfg: DropoutConfig, key, layer: int, shape_TBH, dtype) -> dict[str, Any]:
  """The masks layer ``layer``'s recurrence takes: ``recurrent_scale_BH``,
  ``weight_keep_HG`` and the in-cell variants' ``cell`` (``fused.py``).

  ``key`` None: evaluation, where only zoneout acts (with its expectation).
  """
  _, B, H = shape_TBH
  on = lambda name: not is_off(getattr(cfg, name))
  mkey = lambda name: masks.mask_key(key, name, layer)
  ones = lambda shape: jnp.ones(shape, dtype)
  out: dict[str, Any] = {"recurrent_scale_BH": None, "weight_keep_HG": None}
  cell: dict[str, Array] = {}
  for name in ("zoneout_h", "zoneout_c"):
    if on(name):
      p = getattr(cfg, name)
      if key is None:  # evaluation: the probability itself
        cell[name] = jnp.asarray(p, dtype)
      else:  # training: a boolean mask per step
        cell[name] = masks.zone_mask(mkey(name), p, shape_TBH, batch_axis=1)
  if key is not None:
    if on("recurrent"):
      if cfg.per_gate:  # one mask per sequence and gate, [4, B, H]
        locked = (1, B, H)
        per_gate = cfg.is_per_gate()
        keep = masks.gate_mask(mkey("recurrent"), cfg.recurrent, locked, True, per_gate)[:, 0]
      else:
        keep = masks.keep_mask16(mkey("recurrent"), cfg.recurrent, (B, H), batch_axis=0)
      out["recurrent_scale_BH"] = masks.apply_mask(ones(keep.shape), keep, cfg.recurrent)
    if on("weight"):
      out["weight_keep_HG"] = masks.keep_mask(mkey("weight"), cfg.weight, (H, 4 * H))
    if on("semeniuta"):
      locked = cfg.is_time_locked("semeniuta")
      keep = masks.sequence_mask(mkey("semeniuta"), cfg.semeniuta, shape_TBH, locked)
      scale = masks.apply_mask(ones(keep.shape), keep, cfg.semeniuta)
      cell["semeniuta"] = scale[0] if locked is True else scale  # a run's flag: [T, B, H]
    if on("rnndrop"):
      keep = masks.keep_mask16(mkey("rnndrop"), cfg.rnndrop, (B, H), batch_axis=0)
      cell["rnndrop_keep"] = keep.astype(dtype)
      cell["rnndrop_scale"] = masks.apply_mask(ones((B, H)), keep, cfg.rnndrop)
  out["cell"] = cell or None
  return out


def check_stack_args(hidden, layers, unroll, dropout, compute_dtype) -> None:
  """Shared argument checks of the stack and the models built on it."""
  if not isinstance(hidden, int) or hidden < 1:
    raise ValueError(f"hidden must be a positive int (units per layer), got {hidden!r}")
  if not isinstance(layers, int) or layers < 1:
    raise ValueError(f"layers must be an int >= 1, got {layers!r}")
  if unroll is not None and (not isinstance(unroll, int) or unroll < 1):
    raise ValueError(f"unroll must be an int >= 1 (time steps per scan iteration), got {unroll!r}")
  if not isinstance(dropout, DropoutConfig):
    raise TypeError(
      f"dropout must be a DropoutConfig, got {type(dropout).__name__}; e.g. "
      "DropoutConfig(output=0.3)"
    )
  if jnp.dtype(compute_dtype) not in _COMPUTE_DTYPES:
    raise ValueError(
      f"compute_dtype must be float32 or bfloat16 (or float64 for checks), got {compute_dtype}"
    )


_COMPUTE_DTYPES = tuple(jnp.dtype(d) for d in (jnp.float32, jnp.bfloat16, jnp.float64))


def _valid_steps(lengths: Any, B: int, T: int) -> Array:
  lengths = jnp.asarray(lengths)
  if lengths.shape != (B,):
    raise ValueError(f"lengths must have shape [batch] = ({B},), got {tuple(lengths.shape)}")
  if not jnp.issubdtype(lengths.dtype, jnp.integer):
    raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
  if not isinstance(lengths, jax.core.Tracer):
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 0 or hi > T:
      raise ValueError(
        f"lengths must lie in [0, T] = [0, {T}], got values from {lo} to {hi}; "
        "a length counts the valid steps at the start of each sequence"
      )
  return jnp.arange(T)[:, None] < lengths[None, :]


def _check_carry(carry: Sequence, stack: LSTMStack, B: int) -> Carry:
  want = (B, stack.hidden)
  ok = len(carry) == stack.layers and all(
    len(hc) == 2 and all(tuple(a.shape) == want for a in hc) for hc in carry
  )
  if not ok:
    raise ValueError(
      f"carry must be a tuple of {stack.layers} (h, c) pairs, each of shape {want}; "
      "use stack.initialize_carry(batch_size) for a zero carry"
    )
  dt = state_dtype(stack.compute_dtype)
  return tuple((jnp.asarray(h, dt), jnp.asarray(c, dt)) for h, c in carry)


__all__ = ["IMPLS", "Carry", "LSTMLayer", "LSTMStack", "state_dtype", "symmetric_uniform"]
