"""The LSTM recurrence with a hand-written backward pass (``jax.custom_vjp``).

Autodiff of a scan does two matmuls per step on the way back: ``dz_t @
W_hh^T`` (which the next step needs) and the accumulation ``dW_hh +=
h_{t-1}^T dz_t`` (which nothing in the loop needs). Here the backward scan
keeps only the first; the weight gradient is one ``[H, T*B] @ [T*B, 4H]``
matmul after the loop, and the gate pre-activation gradients ``dz`` come out
as one ``[T, B, 4H]`` block, so the hoisted input projection's backward is
also a single matmul. Serial matmuls per step: forward 1, backward 1 (2 for
autodiff).

The forward pass saves the gate activations, ``c_{t-1}``, ``tanh(c_t)`` and
``h_{t-1}`` (all float32), so the backward pass recomputes nothing. Same
equations, layout and masking as ``lstm._FusedCell``; ``tests/test_fused.py``
checks values and gradients against autodiff of that cell.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

Array = jax.Array


def _step(h, c, xw_BG, valid_B, kernel_hh, scale_BH, cdt):
  """One step: returns the new carry, the output and the residuals."""
  h_in = h if scale_BH is None else h * scale_BH
  z = xw_BG + jnp.dot(h_in.astype(cdt), kernel_hh, preferred_element_type=xw_BG.dtype)
  zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
  i, f, g, o = jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jnp.tanh(zg), jax.nn.sigmoid(zo)
  c_new = f * c + i * g
  tc = jnp.tanh(c_new)
  h_new = o * tc
  res = (jnp.concatenate([i, f, g, o], -1), c, tc, h)
  if valid_B is None:
    return h_new, c_new, h_new, res
  v = valid_B[:, None]
  return jnp.where(v, h_new, h), jnp.where(v, c_new, c), jnp.where(v, h_new, 0.0), res


def _forward(xw_TBG, kernel_hh, h0, c0, valid_TB, scale_BH, unroll):
  cdt = kernel_hh.dtype

  def body(carry, xs):
    h, c = carry
    xw, v = xs
    h, c, y, res = _step(h, c, xw, v, kernel_hh, scale_BH, cdt)
    return (h, c), (y, res)

  (hT, cT), (ys, res) = jax.lax.scan(body, (h0, c0), (xw_TBG, valid_TB), unroll=unroll)
  return (hT, cT), ys, res


@partial(jax.custom_vjp, nondiff_argnums=(6,))
def lstm_recurrence(
  xw_TBG: Array,
  kernel_hh: Array,
  h0: Array,
  c0: Array,
  valid_TB: Array | None,
  scale_BH: Array | None,
  unroll: int,
) -> tuple[tuple[Array, Array], Array]:
  """Runs the LSTM over time given the hoisted input projection.

  Args:
    xw_TBG: ``x @ kernel_ih + bias`` for every step, ``[T, B, 4H]`` (float32).
    kernel_hh: ``[H, 4H]`` in the compute dtype (float32 or bfloat16).
    h0, c0: ``[B, H]`` initial carry (float32).
    valid_TB: bool ``[T, B]``, False at padded steps (which leave the carry
      unchanged and emit zeros), or None.
    scale_BH: recurrent dropout scale on ``h_{t-1}`` (0 or ``1/(1-p)``), or None.
    unroll: time steps per scan iteration.

  Returns:
    ``((h_T, c_T), ys_TBH)``.
  """
  carry, ys, _ = _forward(xw_TBG, kernel_hh, h0, c0, valid_TB, scale_BH, unroll)
  return carry, ys


def _fwd(xw_TBG, kernel_hh, h0, c0, valid_TB, scale_BH, unroll):
  carry, ys, res = _forward(xw_TBG, kernel_hh, h0, c0, valid_TB, scale_BH, unroll)
  return (carry, ys), (res, kernel_hh, valid_TB, scale_BH)


def _bwd(unroll, saved, cotangents):
  (gates, c_prev, tc, h_prev), kernel_hh, valid_TB, scale_BH = saved
  (dhT, dcT), dys = cotangents
  cdt = kernel_hh.dtype
  kernel_t = kernel_hh.T

  def body(carry, xs):
    dh, dc = carry  # cotangents of the carry leaving this step
    dy, act, cp, tct, v = xs
    i, f, g, o = jnp.split(act, 4, axis=-1)
    if v is None:
      dh_new, dc_new, dh_keep, dc_keep = dh + dy, dc, 0.0, 0.0
    else:
      v = v[:, None]
      dh_new = jnp.where(v, dh + dy, 0.0)
      dc_new = jnp.where(v, dc, 0.0)
      dh_keep, dc_keep = jnp.where(v, 0.0, dh), jnp.where(v, 0.0, dc)
    do = dh_new * tct
    dc_total = dc_new + dh_new * o * (1.0 - tct * tct)
    di, df, dg = dc_total * g, dc_total * cp, dc_total * i
    dz = jnp.concatenate(
      [di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g * g), do * o * (1.0 - o)], -1
    )
    dh_in = jnp.dot(dz.astype(cdt), kernel_t, preferred_element_type=dz.dtype)
    dh_prev = (dh_in if scale_BH is None else dh_in * scale_BH) + dh_keep
    dc_prev = dc_total * f + dc_keep
    return (dh_prev, dc_prev), (dz, None if scale_BH is None else dh_in)

  xs = (dys, gates, c_prev, tc, valid_TB)
  (dh0, dc0), (dz_TBG, dh_in_TBH) = jax.lax.scan(body, (dhT, dcT), xs, reverse=True, unroll=unroll)
  h_in = h_prev if scale_BH is None else h_prev * scale_BH
  # The weight gradient: one matmul over all steps, outside the loop.
  dkernel = jnp.einsum(
    "tbh,tbg->hg", h_in.astype(cdt), dz_TBG.astype(cdt), preferred_element_type=jnp.float32
  ).astype(kernel_hh.dtype)
  dscale = None if scale_BH is None else jnp.sum(dh_in_TBH * h_prev, axis=0)
  return dz_TBG, dkernel, dh0, dc0, None, dscale


lstm_recurrence.defvjp(_fwd, _bwd)


def reference_recurrence(
  xw_TBG: Array, kernel_hh: Array, h0: Array, c0: Array, valid_TB, scale_BH, unroll: int
) -> tuple[tuple[Array, Array], Array]:
  """The same function differentiated by autodiff (for tests and benchmarks)."""
  carry, ys, _ = _forward(xw_TBG, kernel_hh, h0, c0, valid_TB, scale_BH, unroll)
  return carry, ys
