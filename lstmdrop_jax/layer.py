"""One LSTM layer over a time-major sequence: its parameters, its cell and its recurrence.

Parameter layout (``layer_{k}`` in a stack's parameters)::

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
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Initializer

from lstmdrop_jax import fused, masks, platform

Array = jax.Array

#: ``"fused"``: a scan with a hand-written backward pass (``fused.py``), the
#: default; ``"scan"``: ``nn.scan`` over a cell, differentiated by autodiff.
IMPLS = ("fused", "scan")


def symmetric_uniform(scale: float) -> Initializer:
  """Initializer drawing from U(-scale, scale), as in Zaremba et al. (2014)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


def state_dtype(compute_dtype: Any) -> Any:
  """dtype of the carry and gate arithmetic: float32, or float64 for float64 compute."""
  return jnp.promote_types(jnp.float32, compute_dtype)


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
    cell = {**cell_invariant, **cell_t}
    h, c, y, _, _ = fused._step(
      h_BH, c_BH, xw_BG, valid_B, kernel_hh, recurrent_scale_BH, self.compute_dtype, cell
    )
    return (h, c), y


class LayerSettings(nn.Module, kw_only=True):
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


_LAYER_FIELDS = tuple(
  f for f in dataclasses.fields(LayerSettings) if f.name not in ("parent", "name")
)


class LSTMLayer(LayerSettings, kw_only=True):
  """One LSTM layer over a time-major sequence (used by ``LSTMStack``).

  Attributes (keyword-only):
    hidden: units H.
    unroll: time steps per scan iteration; None picks ``platform.default_unroll()``.
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
    return_carry: bool = False,
  ) -> Array | tuple[tuple[Array, Array], Array]:
    """The outputs ``[T, B, H]`` (float32); with ``return_carry``, ``((h, c), outputs)``
    as ``flax.linen.RNN`` returns them.

    ``x_TBF``: ``[T, B, F]``, or ``[4, T, B, F]`` with each gate's own copy
    (per-gate input masks). ``recurrent_scale_BH``: ``[B, H]``, or ``[4, B, H]``
    per gate. ``cell``: the masks of the in-cell variants (``fused.CELL_VARIANTS``).
    """
    H, F = self.hidden, x_TBF.shape[-1]
    if self.has_variable("params", "kernel_ih"):
      _check_features(self.name, self.get_variable("params", "kernel_ih").shape[0], F)

    def bias_init(key, shape, dtype=jnp.float32):
      return self.bias_init(key, shape, dtype).at[H : 2 * H].add(self.forget_bias)

    kernel_ih = self.param("kernel_ih", self.kernel_init, (F, 4 * H), jnp.float32)
    kernel_hh = self.param("kernel_hh", self.recurrent_init, (H, 4 * H), jnp.float32)
    bias = self.param("bias", bias_init, (4 * H,), jnp.float32)
    if weight_keep_HG is not None:
      kernel_hh = masks.apply_mask(kernel_hh, weight_keep_HG, weight_rate)

    cdt = self.compute_dtype
    # Hoisted input projection: one matmul for all T steps.
    project = fused.project_steps if x_TBF.ndim == 3 else fused.project_gate_steps
    xw_TBG = project(x_TBF.astype(cdt), kernel_ih.astype(cdt), state_dtype(cdt))
    xw_TBG = xw_TBG + bias.astype(xw_TBG.dtype)
    kernel_hh = kernel_hh.astype(cdt)
    unroll = self.unroll or platform.default_unroll()
    if self.impl == "fused":
      new_carry, y = _fused(xw_TBG, kernel_hh, carry, valid_TB, recurrent_scale_BH, cell, unroll)
    else:
      per_step, invariant = fused._split_cell(cell)
      scan = nn.scan(
        _ScanCell,
        variable_broadcast="params",
        split_rngs={"params": False},
        in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
        out_axes=0,
        unroll=unroll,
      )
      new_carry, y = scan(compute_dtype=cdt, name="scan")(
        carry,
        (xw_TBG, valid_TB, per_step),
        fused.gate_major(kernel_hh, recurrent_scale_BH),
        recurrent_scale_BH,
        invariant,
      )
    return (new_carry, y) if return_carry else y


def _check_features(name: str | None, initialised: int, given: int) -> None:
  if initialised != given:
    raise ValueError(
      f"{name} was initialised for {initialised} input features but got inputs "
      f"with {given}; the last axis of x must be the feature axis of size {initialised}"
    )


def _fused(xw_TBG, kernel_hh, carry, valid_TB, scale_BH, cell, unroll):
  """``fused.lstm_recurrence``, with a clear error for forward-mode autodiff."""
  h0, c0 = carry
  try:
    return fused.lstm_recurrence(xw_TBG, kernel_hh, h0, c0, valid_TB, scale_BH, cell, unroll)
  except TypeError as e:
    if "forward-mode" not in str(e):
      raise
    raise TypeError(
      "forward-mode autodiff (jax.jvp, jacfwd, hessian) of the LSTM needs impl='scan': "
      "the default impl='fused' has a hand-written backward pass, which serves "
      "reverse mode (jax.grad, vjp, jacrev) only. Build the model with impl='scan' "
      "(the same function) to differentiate it forwards"
    ) from None
