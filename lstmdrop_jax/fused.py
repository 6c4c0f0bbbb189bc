"""The LSTM recurrence with a hand-written backward pass (``jax.custom_vjp``).

Autodiff of a scan does two matmuls per step on the way back: ``dz_t @
W_hh^T`` (which the next step needs) and the accumulation ``dW_hh +=
h_{t-1}^T dz_t`` (which nothing in the loop needs). Here the backward scan
keeps only the first; the weight gradient is one ``[H, T*B] @ [T*B, 4H]``
matmul after the loop, and the gate pre-activation gradients ``dz`` come out
as one ``[T, B, 4H]`` block, so the hoisted input projection's backward is
also a single matmul. Serial matmuls per step: forward 1, backward 1 (2 for
autodiff).

The forward loop writes, per step, the output and two residuals: the gate
activations and the cell carry ``c_t`` (and, only for padded batches, the
``h`` carry, which the outputs then no longer hold). ``c_{t-1}``, ``h_{t-1}``
and ``tanh(c_t)`` are rebuilt from these for all steps at once before the
backward loop: shifting a stacked block costs far less than writing three
more blocks one step at a time. Same equations, layout and masking as the
``nn.scan`` cell (``layer._ScanCell``); ``tests/test_fused.py`` checks values
and gradients against autodiff of that cell.

The in-cell dropout variants (``CELL_VARIANTS``) enter the step as masks
drawn outside the loop (``cell``: a dict, each entry ``[T, B, H]`` for a
fresh mask at every step, ``[B, H]`` for one mask per sequence, or a scalar).
With the step's candidate state ``c~ = k (f c_{t-1} + i (u g))`` and output
``h~ = r o tanh(c~)``::

  semeniuta  u: dropout on the cell update g (Semeniuta et al., 2016)
  rnndrop    k in {0, 1}, r = k / (1 - p): one mask per sequence on the cell
             state (Moon et al., 2015); a dropped unit's cell is zero, a kept
             unit's output is scaled so its expectation is unchanged (scaling
             the cell itself would compound through the recurrence)
  zoneout_c  c_t = z c_{t-1} + (1 - z) c~ (Krueger et al., 2017; z the
             keep-previous mask, or its probability at evaluation)
  zoneout_h  h_t = z h_{t-1} + (1 - z) h~

A variant that is off is absent from ``cell`` and adds nothing to the
compiled loop.

Per-gate recurrent masks (``DropoutConfig.per_gate``): ``scale`` is
``[4, B, H]`` and gate k's block of ``z`` is ``(h_{t-1} * scale[k]) @ W_k``
(``W_k`` its block of ``W_hh``, ``gate_major``), one matmul batched over the
gates; on the way back ``dL/dh_{t-1} = sum_k (dz_k @ W_k^T) * scale[k]``, and
the weight gradient is one batched contraction over all steps after the
loop, as without.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lstmdrop_jax import platform

Array = jax.Array


def project_steps(x_TBF: Array, w_FG: Array, out_dtype: Any) -> Array:
  """``x_TBF @ w_FG`` for every step at once: ``[T, B, G]``."""
  if not platform.flatten_time_and_batch():
    return jnp.einsum("tbf,fg->tbg", x_TBF, w_FG, preferred_element_type=out_dtype)
  T, B, F = x_TBF.shape
  out = jnp.dot(x_TBF.reshape(T * B, F), w_FG, preferred_element_type=out_dtype)
  return out.reshape(T, B, -1)


def project_gate_steps(x_KTBF: Array, w_FG: Array, out_dtype: Any) -> Array:
  """Each gate's copy of the input (gate-major, per-gate input masks) times its block
  of ``w_FG``, for every step: ``[K, T, B, F]`` and ``[F, K*H]`` give ``[T, B, K*H]``."""
  K, T, B, F = x_KTBF.shape
  w_KFH = w_FG.reshape(F, K, -1).transpose(1, 0, 2)
  if not platform.flatten_time_and_batch():
    out = jnp.einsum("ktbf,kfh->tbkh", x_KTBF, w_KFH, preferred_element_type=out_dtype)
    return out.reshape(T, B, -1)
  x_KNF = x_KTBF.reshape(K, T * B, F)
  dims = (((2,), (1,)), ((0,), (0,)))
  out_KNH = jax.lax.dot_general(x_KNF, w_KFH, dims, preferred_element_type=out_dtype)
  return out_KNH.transpose(1, 0, 2).reshape(T, B, -1)


def contract_steps(a_TBH: Array, b_TBG: Array, out_dtype: Any) -> Array:
  """``sum over t, b of a[t, b]^T b[t, b]``: ``[H, G]`` (a weight gradient)."""
  if not platform.flatten_time_and_batch():
    return jnp.einsum("tbh,tbg->hg", a_TBH, b_TBG, preferred_element_type=out_dtype)
  T, B = a_TBH.shape[:2]
  return jnp.dot(
    a_TBH.reshape(T * B, -1).T, b_TBG.reshape(T * B, -1), preferred_element_type=out_dtype
  )


def contract_gate_steps(a_TKBH: Array, b_TBG: Array, out_dtype: Any) -> Array:
  """``contract_steps`` gate by gate: block k of the ``[H, K*H]`` result is
  ``sum over t, b of a[t, k, b]^T b[t, b, block k]`` (``a`` gate-major)."""
  T, K, B, H = a_TKBH.shape
  b_TBKG = b_TBG.reshape(T, B, K, -1)
  if not platform.flatten_time_and_batch():
    out = jnp.einsum("tkbh,tbkg->hkg", a_TKBH, b_TBKG, preferred_element_type=out_dtype)
    return out.reshape(H, -1)
  a_KNH = a_TKBH.transpose(1, 0, 2, 3).reshape(K, T * B, H)
  b_KNG = b_TBKG.reshape(T * B, K, -1).transpose(1, 0, 2)
  out_KHG = jax.lax.dot_general(
    a_KNH, b_KNG, (((1,), (1,)), ((0,), (0,))), preferred_element_type=out_dtype
  )
  return out_KHG.transpose(1, 0, 2).reshape(H, -1)


def gate_major(kernel_hh: Array, scale: Array | None) -> Array:
  """``kernel_hh`` as the step takes it: ``[H, 4H]``, or with per-gate masks (``scale``
  ``[4, B, H]``) gate-major, ``[4, H, H]``, so that the step's per-gate matmul is
  batched over a leading axis (no transposes of the kernel in the loop)."""
  if scale is None or scale.ndim == 2:
    return kernel_hh
  H = kernel_hh.shape[0]
  return kernel_hh.reshape(H, 4, -1).transpose(1, 0, 2)


def _recurrent_input(h_BH: Array, scale: Array | None) -> Array:
  """``h_{t-1}`` as the recurrent matmul takes it: ``[B, H]``, or ``[4, B, H]`` with
  per-gate masks (``scale`` ``[4, B, H]``)."""
  if scale is None:
    return h_BH
  return (h_BH[None] if scale.ndim == 3 else h_BH) * scale


def _recurrent_matmul(h_in: Array, kernel: Array, out_dtype: Any) -> Array:
  """``h_in @ kernel_hh``: ``[B, 4H]``; per gate (both gate-major, ``gate_major``), each
  gate's copy of ``h`` meets its own kernel block."""
  if h_in.ndim == 2:
    return jnp.dot(h_in, kernel, preferred_element_type=out_dtype)
  dims = (((2,), (1,)), ((0,), (0,)))
  out_KBG = jax.lax.dot_general(h_in, kernel, dims, preferred_element_type=out_dtype)
  return out_KBG.transpose(1, 0, 2).reshape(h_in.shape[1], -1)


def gate_activations(z_BG: Array) -> Array:
  """``sigmoid`` on the i, f, o blocks and ``tanh`` on the g block of ``[B, 4H]``.

  One ``tanh`` over the whole block, using ``sigmoid(x) = (1 + tanh(x/2)) / 2``:
  the same function, and on a CPU about twice as fast as three sigmoids and
  a tanh (each sigmoid there is an exp and a divide).
  """
  H = z_BG.shape[-1] // 4
  is_g = (np.arange(4 * H) // H) == 2
  t = jnp.tanh(z_BG * np.where(is_g, 1.0, 0.5).astype(z_BG.dtype))
  return jnp.where(is_g, t, 0.5 * t + 0.5)


#: The in-cell variants ``cell`` may hold (``recurrent`` is ``scale_BH``).
CELL_VARIANTS = ("zoneout_h", "zoneout_c", "semeniuta", "rnndrop_keep", "rnndrop_scale")


def _split_cell(cell: dict | None) -> tuple[dict, dict]:
  """``cell`` -> (per-step masks ``[T, B, H]``, loop-invariant masks or scalars)."""
  cell = cell or {}
  unknown = sorted(set(cell) - set(CELL_VARIANTS))
  if unknown:
    raise ValueError(f"unknown cell variants {unknown}; valid ones are {list(CELL_VARIANTS)}")
  per_step = {k: v for k, v in cell.items() if jnp.ndim(v) == 3}
  return per_step, {k: v for k, v in cell.items() if k not in per_step}


def _mix(z: Array, prev: Array, new: Array) -> Array:
  """Zoneout: ``z prev + (1 - z) new``; a boolean ``z`` (training) selects."""
  if z.dtype == jnp.bool_:
    return jnp.where(z, prev, new)
  return z * prev + (1.0 - z) * new


def _split_by(z: Array, g: Array) -> tuple[Array, Array]:
  """``(z g, (1 - z) g)``: a cotangent's shares of the kept and the new value."""
  if z.dtype == jnp.bool_:
    zero = jnp.zeros((), g.dtype)
    return jnp.where(z, g, zero), jnp.where(z, zero, g)
  return z * g, (1.0 - z) * g


def _step(h, c, xw_BG, valid_B, kernel_hh, scale_BH, cdt, cell_t=None):
  """One step: the new carry ``(h, c)``, the output, the gate activations and ``c~``.

  ``cell_t``: this step's in-cell masks (see the module doc); None or empty
  for the plain LSTM.
  """
  m = cell_t or {}
  h_in = _recurrent_input(h, scale_BH)
  z = xw_BG + _recurrent_matmul(h_in.astype(cdt), kernel_hh, xw_BG.dtype)
  act = gate_activations(z)
  i, f, g, o = jnp.split(act, 4, axis=-1)
  if "semeniuta" in m:
    g = g * m["semeniuta"]
  c_new = f * c + i * g
  if "rnndrop_keep" in m:
    c_new = c_new * m["rnndrop_keep"]
  h_new = o * jnp.tanh(c_new)
  if "rnndrop_scale" in m:
    h_new = h_new * m["rnndrop_scale"]
  c_cand = c_new
  if "zoneout_c" in m:
    c_new = _mix(m["zoneout_c"], c, c_new)
  if "zoneout_h" in m:
    h_new = _mix(m["zoneout_h"], h, h_new)
  if valid_B is None:
    return h_new, c_new, h_new, act, c_cand
  v = valid_B[:, None]
  return jnp.where(v, h_new, h), jnp.where(v, c_new, c), jnp.where(v, h_new, 0.0), act, c_cand


def _forward(xw_TBG, kernel_hh, h0, c0, valid_TB, scale_BH, cell, unroll):
  """The loop; residuals ``(act, c carries, h carries, c~ or None)``, each stacked over T."""
  cdt = kernel_hh.dtype
  padded = valid_TB is not None
  per_step, invariant = _split_cell(cell)
  kernel_hh = gate_major(kernel_hh, scale_BH)
  keep_cand = "zoneout_c" in (cell or {})  # only then does c~ differ from the c carry

  def body(carry, xs):
    h, c = carry
    xw, v, masks_t = xs
    h, c, y, act, c_cand = _step(h, c, xw, v, kernel_hh, scale_BH, cdt, {**invariant, **masks_t})
    return (h, c), (y, act, c, h if padded else None, c_cand if keep_cand else None)

  xs = (xw_TBG, valid_TB, per_step)
  (hT, cT), (ys, act, cs, hs, cands) = jax.lax.scan(body, (h0, c0), xs, unroll=unroll)
  # Without padding the h carries are the outputs.
  return (hT, cT), ys, (act, cs, ys if hs is None else hs, cands)


def _shift_in(first_BX: Array, stacked_TBX: Array) -> Array:
  """``[first, stacked[0], ..., stacked[T-2]]``: the value entering each step."""
  return jnp.concatenate([first_BX[None], stacked_TBX[:-1]], axis=0)


@partial(jax.custom_vjp, nondiff_argnums=(7,))
def lstm_recurrence(
  xw_TBG: Array,
  kernel_hh: Array,
  h0: Array,
  c0: Array,
  valid_TB: Array | None,
  scale_BH: Array | None,
  cell: dict[str, Array] | None,
  unroll: int,
) -> tuple[tuple[Array, Array], Array]:
  """Runs the LSTM over time given the hoisted input projection.

  Args:
    xw_TBG: ``x @ kernel_ih + bias`` for every step, ``[T, B, 4H]`` (float32).
    kernel_hh: ``[H, 4H]`` in the compute dtype (float32 or bfloat16).
    h0, c0: ``[B, H]`` initial carry (float32).
    valid_TB: bool ``[T, B]``, False at padded steps (which leave the carry
      unchanged and emit zeros), or None.
    scale_BH: recurrent dropout scale on ``h_{t-1}`` (0 or ``1/(1-p)``), ``[B, H]``
      or per gate ``[4, B, H]``, or None.
    cell: the in-cell variants' masks (module doc), or None.
    unroll: time steps per scan iteration.

  Returns:
    ``((h_T, c_T), ys_TBH)``.

  Raises:
    TypeError: under forward-mode autodiff (``jax.jvp``, ``jacfwd``,
      ``hessian``), which the hand-written backward pass cannot serve; the
      message names ``impl="scan"``, which can.
  """
  carry, ys, _ = _forward(xw_TBG, kernel_hh, h0, c0, valid_TB, scale_BH, cell, unroll)
  return carry, ys


def _fwd(xw_TBG, kernel_hh, h0, c0, valid_TB, scale_BH, cell, unroll):
  carry, ys, res = _forward(xw_TBG, kernel_hh, h0, c0, valid_TB, scale_BH, cell, unroll)
  return (carry, ys), (res, h0, c0, kernel_hh, valid_TB, scale_BH, cell)


def _coefficients(act, cs, c0, cands, per_step, invariant):
  """Everything of the backward step that does not depend on the backward carry,
  for all steps at once: ``(A, coef, ft)`` with (see ``_bwd``) the cotangents
  ``dc~ = w + hu * A``, ``dz = [dc~, dc~, dc~, hu] * coef``, ``dc_{t-1} = dc~ * ft``.
  """
  masks = {**invariant, **per_step}
  i, f, g, o = jnp.split(act, 4, axis=-1)
  c_prev = _shift_in(c0, cs)
  # At a padded step cs holds the unchanged carry, not c~; its coefficients
  # are then never used (the loop zeroes u and w there), they only need to be
  # finite.
  tc = jnp.tanh(cs if cands is None else cands)
  if not masks.keys() - {"zoneout_h", "zoneout_c"}:  # the plain cell (zoneout acts outside)
    k_c = o * (1.0 - tc * tc)
    coef = jnp.concatenate(
      [g * i * (1.0 - i), c_prev * f * (1.0 - f), i * (1.0 - g * g), tc * o * (1.0 - o)], -1
    )
    return k_c, coef, f
  u = masks.get("semeniuta", 1.0)
  k = masks.get("rnndrop_keep", 1.0)
  r = masks.get("rnndrop_scale", 1.0)
  A = r * o * (1.0 - tc * tc)
  coef = jnp.concatenate(
    [k * (u * g) * i * (1.0 - i), k * c_prev * f * (1.0 - f), k * u * i * (1.0 - g * g),
     r * tc * o * (1.0 - o)],
    -1,
  )  # fmt: skip
  return A, coef, k * f


def _bwd(unroll, saved, cotangents):
  (act, cs, hs, cands), h0, c0, kernel_hh, valid_TB, scale_BH, cell = saved
  (dhT, dcT), dys = cotangents
  per_step, invariant = _split_cell(cell)
  h_prev = _shift_in(h0, hs)
  cdt = kernel_hh.dtype
  gated = scale_BH is not None and scale_BH.ndim == 3
  kernel_t = kernel_hh.T
  w_KHG = gate_major(kernel_hh, scale_BH)
  # With u = dL/dh_t and w = dL/dc_t (zoneout: hu = u (1 - z_h), w (1 - z_c)):
  #   dc~ = w + hu * A,  dz = [dc~, dc~, dc~, hu] * coef,
  #   dL/dc_{t-1} = dc~ * ft (+ w z_c),  dL/dh_{t-1} = dz @ W_hh^T (* scale) (+ u z_h)
  A, coef, ft = _coefficients(act, cs, c0, cands, per_step, invariant)
  v_TB1 = None if valid_TB is None else valid_TB[..., None].astype(coef.dtype)
  zh_inv, zc_inv = invariant.get("zoneout_h"), invariant.get("zoneout_c")

  def body(carry, xs):
    dh, dc = carry  # cotangents of the carry leaving this step
    dy, a, cf, ft_t, v, masks_t = xs
    zh = masks_t.get("zoneout_h", zh_inv)
    zc = masks_t.get("zoneout_c", zc_inv)
    if v is None:
      u, w = dh + dy, dc
    else:  # a padded step passes the cotangents through untouched
      u, w = (dh + dy) * v, dc * v
    u_kept, hu = (None, u) if zh is None else _split_by(zh, u)
    w_kept, wc = (None, w) if zc is None else _split_by(zc, w)
    w_total = wc + hu * a
    dz = jnp.concatenate([w_total, w_total, w_total, hu], -1) * cf
    if gated:  # each gate's block back through its kernel block and its mask
      dz_KBG = dz.reshape(dz.shape[0], 4, -1).transpose(1, 0, 2).astype(cdt)
      dims = (((2,), (2,)), ((0,), (0,)))
      dh_in = jax.lax.dot_general(dz_KBG, w_KHG, dims, preferred_element_type=dz.dtype)
      dh_prev = jnp.sum(dh_in * scale_BH, axis=0)
    else:
      dh_in = jnp.dot(dz.astype(cdt), kernel_t, preferred_element_type=dz.dtype)
      dh_prev = dh_in if scale_BH is None else dh_in * scale_BH
    dc_prev = w_total * ft_t
    if u_kept is not None:
      dh_prev = dh_prev + u_kept
    if w_kept is not None:
      dc_prev = dc_prev + w_kept
    if v is not None:
      dh_prev, dc_prev = dh_prev + dh * (1.0 - v), dc_prev + dc * (1.0 - v)
    return (dh_prev, dc_prev), (dz, None if scale_BH is None else dh_in)

  xs = (dys, A, coef, ft, v_TB1, per_step)
  (dh0, dc0), (dz_TBG, dh_in_TBH) = jax.lax.scan(body, (dhT, dcT), xs, reverse=True, unroll=unroll)
  dkernel, dscale = _weight_and_scale_grads(h_prev, dz_TBG, dh_in_TBH, kernel_hh, scale_BH)
  dcell = None if cell is None else jax.tree.map(jnp.zeros_like, cell)  # masks: no gradient
  return dz_TBG, dkernel, dh0, dc0, None, dscale, dcell


def _weight_and_scale_grads(h_prev, dz_TBG, dh_in_TBH, kernel_hh, scale_BH):
  """The recurrent kernel's gradient, one ``[H, T*B] @ [T*B, 4H]`` matmul over all steps
  outside the loop (per gate: one per gate's block, batched), and the recurrent mask's
  (None without one)."""
  cdt = kernel_hh.dtype
  gated = scale_BH is not None and scale_BH.ndim == 3
  if gated:
    h_in = h_prev[:, None] * scale_BH
    dkernel = contract_gate_steps(h_in.astype(cdt), dz_TBG.astype(cdt), jnp.float32)
  else:
    h_in = h_prev if scale_BH is None else h_prev * scale_BH
    dkernel = contract_steps(h_in.astype(cdt), dz_TBG.astype(cdt), jnp.float32)
  dkernel = dkernel.astype(kernel_hh.dtype)
  if scale_BH is None:
    return dkernel, None
  return dkernel, jnp.sum(dh_in_TBH * (h_prev[:, None] if gated else h_prev), axis=0)


lstm_recurrence.defvjp(_fwd, _bwd)


def reference_recurrence(
  xw_TBG: Array, kernel_hh: Array, h0: Array, c0: Array, valid_TB, scale_BH, cell, unroll: int
) -> tuple[tuple[Array, Array], Array]:
  """The same function differentiated by autodiff (for tests and benchmarks)."""
  carry, ys, _ = _forward(xw_TBG, kernel_hh, h0, c0, valid_TB, scale_BH, cell, unroll)
  return carry, ys
