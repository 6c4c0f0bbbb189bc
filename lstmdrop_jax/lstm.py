"""The recurrent core: a fused LSTM layer scanned over time, and a stack of them.

Parameter layout of one layer (``layer_{k}`` in the stack's parameters)::

  kernel_ih  [F_in, 4H]   input-to-gates kernel
  kernel_hh  [H,    4H]   recurrent kernel
  bias       [4H]         one bias (PyTorch's bias_ih + bias_hh)

The gate blocks along the last axis are in the order **i, f, g, o** (input,
forget, cell candidate, output), the same order as PyTorch ``nn.LSTM`` and
Keras ``LSTM`` (which calls ``g`` "c"). The kernels are the transposes of
PyTorch's ``weight_ih_l{k}`` / ``weight_hh_l{k}``, and equal Keras's
``kernel`` / ``recurrent_kernel``; ``convert.py`` maps both. The cell is::

  z = x_t @ kernel_ih + bias + h_{t-1} @ kernel_hh         # [B, 4H]
  i, f, g, o = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)
  c_t = f * c_{t-1} + i * g
  h_t = o * tanh(c_t)

With per-gate masks (``DropoutConfig.per_gate``) a layer's input arrives as
``[4, T, B, F]``, the copy each gate sees, and ``h_{t-1}``'s mask is
``[4, B, H]``; gate k's block of ``z`` then takes its own copy and kernel
block (Gal & Ghahramani's untied-weights LSTM).

Speed: ``x @ kernel_ih + bias`` for every step is one matmul *before* the
scan, so the scan body holds only the ``[B, H] @ [H, 4H]`` recurrent matmul
and the gate arithmetic. Matmuls run in ``compute_dtype`` with float32
accumulation; the carry and gate arithmetic stay float32.

Shapes are batch-major at the API (``[B, T, F]``) and time-major inside. A
carry is a tuple over layers of ``(h, c)`` pairs, each ``[B, H]`` float32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Initializer

from lstmdrop_jax import dropout as dr
from lstmdrop_jax import fused
from lstmdrop_jax.dropout import DropoutConfig

Array = jax.Array
Carry = tuple[tuple[Array, Array], ...]


def symmetric_uniform(scale: float) -> Initializer:
  """Initializer drawing from U(-scale, scale), as in Zaremba et al. (2014)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


def _is_traced(x: Any) -> bool:
  return isinstance(x, jax.core.Tracer)


class _ScanCell(nn.Module):
  """One time step for ``nn.scan`` (the autodiff path, ``impl="scan"``).

  Parameter-free: kernels and masks arrive as arguments. The equations are
  ``fused._step``'s, so both paths compute the same function.
  """

  compute_dtype: Any

  @nn.compact
  def __call__(self, carry, xs, kernel_hh, recurrent_scale_BH, cell_invariant):
    h_BH, c_BH = carry
    xw_BG, valid_B, cell_t = xs
    h, c, y, _, _ = fused._step(
      h_BH,
      c_BH,
      xw_BG,
      valid_B,
      kernel_hh,
      recurrent_scale_BH,
      self.compute_dtype,
      {**cell_invariant, **cell_t},
    )
    return (h, c), y


class _LayerSettings(nn.Module, kw_only=True):
  """The settings a stack shares with each of its layers (keyword-only)."""

  hidden: int
  unroll: int | None = None
  compute_dtype: Any = jnp.float32
  impl: str = "fused"
  kernel_init: Initializer = nn.initializers.lecun_normal()
  recurrent_init: Initializer = nn.initializers.orthogonal()
  bias_init: Initializer = nn.initializers.zeros_init()
  forget_bias: float = 1.0

  def layer_settings(self) -> dict[str, Any]:
    """These settings as keyword arguments of ``LSTMLayer``."""
    return {f.name: getattr(self, f.name) for f in _LAYER_FIELDS}


class LSTMLayer(_LayerSettings, kw_only=True):
  """One LSTM layer over a time-major sequence (used by ``LSTMStack``).

  Attributes (keyword-only):
    hidden: units H.
    unroll: time steps per scan iteration; None picks ``default_unroll()``.
    compute_dtype: dtype of the matmul operands (float32 or bfloat16).
    impl: ``"fused"`` (hand-written backward pass, the default) or ``"scan"``
      (``nn.scan`` differentiated by autodiff); the same function.
    kernel_init, recurrent_init, bias_init: initializers; ``forget_bias`` is
      added to the f-block of the bias at initialisation.
  """

  @nn.compact
  def __call__(
    self,
    x_TBF: Array,
    carry: tuple[Array, Array],
    *,
    valid_TB: Array | None = None,
    recurrent_scale_BH: Array | None = None,
    weight_keep_HG: Array | None = None,
    weight_rate: Any = 0.0,
    cell: dict[str, Array] | None = None,
  ) -> tuple[tuple[Array, Array], Array]:
    """Returns the final ``(h, c)`` and the outputs ``[T, B, H]`` (float32).

    ``x_TBF``: ``[T, B, F]``, or ``[4, T, B, F]`` with each gate's own copy
    (per-gate input masks). ``recurrent_scale_BH``: ``[B, H]``, or ``[4, B, H]``
    per gate. ``cell``: the masks of the in-cell variants (``fused.CELL_VARIANTS``).
    """
    H, F = self.hidden, x_TBF.shape[-1]
    if self.has_variable("params", "kernel_ih"):
      F_init = self.get_variable("params", "kernel_ih").shape[0]
      if F_init != F:
        raise ValueError(
          f"{self.name} was initialised for {F_init} input features but got inputs "
          f"with {F}; the last axis of x must be the feature axis of size {F_init}"
        )

    def bias_init(key, shape, dtype=jnp.float32):
      b = self.bias_init(key, shape, dtype)
      return b.at[H : 2 * H].add(self.forget_bias)

    kernel_ih = self.param("kernel_ih", self.kernel_init, (F, 4 * H), jnp.float32)
    kernel_hh = self.param("kernel_hh", self.recurrent_init, (H, 4 * H), jnp.float32)
    bias = self.param("bias", bias_init, (4 * H,), jnp.float32)
    if weight_keep_HG is not None:
      kernel_hh = dr.apply_mask(kernel_hh, weight_keep_HG, weight_rate)

    cdt = self.compute_dtype
    # Hoisted input projection: one matmul for all T steps.
    project = fused.project_steps if x_TBF.ndim == 3 else fused.project_gate_steps
    xw_TBG = project(x_TBF.astype(cdt), kernel_ih.astype(cdt), state_dtype(cdt))
    xw_TBG = xw_TBG + bias.astype(xw_TBG.dtype)

    kernel_hh = kernel_hh.astype(cdt)
    unroll = self.unroll or default_unroll()
    if self.impl == "fused":
      h0, c0 = carry
      try:
        return fused.lstm_recurrence(
          xw_TBG, kernel_hh, h0, c0, valid_TB, recurrent_scale_BH, cell, unroll
        )
      except TypeError as e:
        if "forward-mode" not in str(e):
          raise
        raise TypeError(
          "forward-mode autodiff (jax.jvp, jacfwd, hessian) of the LSTM needs impl='scan': "
          "the default impl='fused' has a hand-written backward pass, which serves "
          "reverse mode (jax.grad, vjp, jacrev) only. Build the model with impl='scan' "
          "(the same function) to differentiate it forwards"
        ) from None
    per_step, invariant = fused._split_cell(cell)
    kernel_hh = fused.gate_major(kernel_hh, recurrent_scale_BH)
    scan = nn.scan(
      _ScanCell,
      variable_broadcast="params",
      split_rngs={"params": False},
      in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
      out_axes=0,
      unroll=unroll,
    )
    return scan(compute_dtype=cdt, name="scan")(
      carry, (xw_TBG, valid_TB, per_step), kernel_hh, recurrent_scale_BH, invariant
    )


class LSTMStack(_LayerSettings, kw_only=True):
  """A stack of LSTM layers with dropout at the input, between layers and output.

  Call signature: ``y, carry = stack(x_BTF, lengths=None, carry=None,
  train=False, return_sequences=True)``.

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

  Returns:
    ``(y, carry)``: outputs (float32, after the output placement's dropout)
    and the final carry. ``train=False`` applies no dropout at all.

  Attributes (keyword-only):
    hidden: units per layer H (> 0).
    layers: number of layers (>= 1).
    dropout: a ``DropoutConfig``; ``embedding`` is ignored here.
    unroll: time steps per scan iteration (>= 1); None (the default) picks
      ``default_unroll()``: 8 on accelerators, 1 on CPUs.
    compute_dtype: matmul dtype, ``jnp.float32`` or ``jnp.bfloat16``.
    impl: ``"fused"`` (default) or ``"scan"``, see ``IMPLS``.
    kernel_init, recurrent_init, bias_init, forget_bias: initialisation.
  """

  layers: int = 1
  dropout: DropoutConfig = DropoutConfig()

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
  ) -> tuple[Array, Carry]:
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
    drop = train and bool(cfg.active(lm=False))
    key = None
    if drop:
      if not self.has_rng("dropout"):
        raise ValueError(
          "train=True with non-zero dropout needs a PRNG key: call "
          "model.apply(variables, x, train=True, rngs={'dropout': key}), or pass "
          "train=False to evaluate"
        )
      key = self.make_rng("dropout")

    def drop_seq(x_TBF, placement, layer):
      """``x_TBF`` after ``placement``'s dropout; with per-gate masks on a layer's input,
      the copies the four gates see, ``[4, T, B, F]``."""
      rate = getattr(cfg, placement)
      if not drop or dr.is_off(rate):
        return x_TBF
      mkey, locked = dr.mask_key(key, placement, layer), cfg.is_time_locked(placement)
      if cfg.per_gate and placement != "output":
        keep = dr.gate_mask(mkey, rate, x_TBF.shape, locked, cfg.is_per_gate())
        return dr.apply_mask(x_TBF[None], keep, rate)
      return dr.apply_mask(x_TBF, dr.sequence_mask(mkey, rate, x_TBF.shape, locked), rate)

    x_TBF = drop_seq(jnp.swapaxes(x_BTF, 0, 1), "input", 0)
    new_carry = []
    for layer in range(self.layers):
      if layer > 0:
        x_TBF = drop_seq(x_TBF, "between", layer)
      masks = _layer_masks(
        cfg, key if drop else None, layer, (T, B, self.hidden), state_dtype(self.compute_dtype)
      )
      layer_carry, x_TBF = LSTMLayer(**self.layer_settings(), name=f"layer_{layer}")(
        x_TBF, carry[layer], valid_TB=valid_TB, weight_rate=cfg.weight, **masks
      )
      new_carry.append(layer_carry)

    if return_sequences:
      y = drop_seq(x_TBF, "output", self.layers)
      return jnp.swapaxes(y, 0, 1), tuple(new_carry)
    # The top layer's final h is its output at the last valid step: padded
    # steps leave the carry unchanged.
    last_BH = new_carry[-1][0]
    if drop and not dr.is_off(cfg.output):
      okey = dr.mask_key(key, "output", self.layers)
      keep = dr.keep_mask16(okey, cfg.output, last_BH.shape, batch_axis=0)
      last_BH = dr.apply_mask(last_BH, keep, cfg.output)
    return last_BH, tuple(new_carry)


_LAYER_FIELDS = tuple(
  f for f in dataclasses.fields(_LayerSettings) if f.name not in ("parent", "name")
)


def _layer_masks(cfg: DropoutConfig, key, layer: int, shape_TBH, dtype) -> dict[str, Any]:
  """The masks layer ``layer``'s recurrence takes: ``recurrent_scale_BH``,
  ``weight_keep_HG`` and the in-cell variants' ``cell`` (``fused.py``).

  ``key`` None: evaluation, where only zoneout acts (with its expectation).
  """
  _, B, H = shape_TBH
  on = lambda name: not dr.is_off(getattr(cfg, name))
  mkey = lambda name: dr.mask_key(key, name, layer)
  ones = lambda shape: jnp.ones(shape, dtype)
  out: dict[str, Any] = {"recurrent_scale_BH": None, "weight_keep_HG": None}
  cell: dict[str, Array] = {}
  for name in ("zoneout_h", "zoneout_c"):
    if on(name):
      p = getattr(cfg, name)
      if key is None:  # evaluation: the probability itself
        cell[name] = jnp.asarray(p, dtype)
      else:  # training: a boolean mask per step
        cell[name] = dr.zone_mask(mkey(name), p, shape_TBH, batch_axis=1)
  if key is not None:
    if on("recurrent"):
      if cfg.per_gate:  # one mask per sequence and gate, [4, B, H]
        locked = (1, B, H)
        keep = dr.gate_mask(mkey("recurrent"), cfg.recurrent, locked, True, cfg.is_per_gate())[:, 0]
      else:
        keep = dr.keep_mask16(mkey("recurrent"), cfg.recurrent, (B, H), batch_axis=0)
      out["recurrent_scale_BH"] = dr.apply_mask(ones(keep.shape), keep, cfg.recurrent)
    if on("weight"):
      out["weight_keep_HG"] = dr.keep_mask(mkey("weight"), cfg.weight, (H, 4 * H))
    if on("semeniuta"):
      locked = cfg.is_time_locked("semeniuta")
      keep = dr.sequence_mask(mkey("semeniuta"), cfg.semeniuta, shape_TBH, locked)
      scale = dr.apply_mask(ones(keep.shape), keep, cfg.semeniuta)
      cell["semeniuta"] = scale[0] if locked is True else scale  # a run's flag: [T, B, H]
    if on("rnndrop"):
      keep = dr.keep_mask16(mkey("rnndrop"), cfg.rnndrop, (B, H), batch_axis=0)
      cell["rnndrop_keep"] = keep.astype(dtype)
      cell["rnndrop_scale"] = dr.apply_mask(ones((B, H)), keep, cfg.rnndrop)
  out["cell"] = cell or None
  return out


#: ``"fused"``: a scan with a hand-written backward pass (``fused.py``), the
#: default; ``"scan"``: ``nn.scan`` over a cell, differentiated by autodiff.
IMPLS = ("fused", "scan")


def default_unroll() -> int:
  """Time steps per scan iteration when none is given: 8 on GPUs and TPUs
  (the recurrence is latency-bound there), 1 on CPUs, where larger unrolls
  gave no measurable gain and compile longer (docs/PERFORMANCE.md)."""
  return 1 if jax.default_backend() == "cpu" else 8


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


def state_dtype(compute_dtype: Any) -> Any:
  """dtype of the carry and gate arithmetic: float32, or float64 for float64 compute."""
  return jnp.promote_types(jnp.float32, compute_dtype)


def _valid_steps(lengths: Any, B: int, T: int) -> Array:
  lengths = jnp.asarray(lengths)
  if lengths.shape != (B,):
    raise ValueError(f"lengths must have shape [batch] = ({B},), got {tuple(lengths.shape)}")
  if not jnp.issubdtype(lengths.dtype, jnp.integer):
    raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
  if not _is_traced(lengths):
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
