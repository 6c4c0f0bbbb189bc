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
``nn.scan`` cell (``lstm._ScanCell``); ``tests/test_fused.py`` checks values
and gradients against autodiff of that cell.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _flatten_time_and_batch() -> bool:
  """Whether ``[T, B, ...]`` blocks are flattened to ``[T*B, ...]`` for matmuls.

  Flattening makes the products below, and the gradients autodiff derives
  from them, plain 2-D matmuls: XLA's CPU backend runs a contraction over two
  dimensions (time and batch) markedly slower, about a tenth of a seed_clf
  training step (docs/PERFORMANCE.md). But merging T and B puts a sharded
  batch axis inside the merged one, which XLA can only honour by gathering
  the batch on every device, so with several devices (data parallelism) the
  3-D form is kept. The same product either way; the rounding may differ.
  """
  return jax.device_count() == 1


def project_steps(x_TBF: Array, w_FG: Array, out_dtype: Any) -> Array:
  """``x_TBF @ w_FG`` for every step at once: ``[T, B, G]``."""
  if not _flatten_time_and_batch():
    return jnp.einsum("tbf,fg->tbg", x_TBF, w_FG, preferred_element_type=out_dtype)
  T, B, F = x_TBF.shape
  out = jnp.dot(x_TBF.reshape(T * B, F), w_FG, preferred_element_type=out_dtype)
  return out.reshape(T, B, -1)


def contract_steps(a_TBH: Array, b_TBG: Array, out_dtype: Any) -> Array:
  """``sum over t, b of a[t, b]^T b[t, b]``: ``[H, G]`` (a weight gradient)."""
  if not _flatten_time_and_batch():
    return jnp.einsum("tbh,tbg->hg", a_TBH, b_TBG, preferred_element_type=out_dtype)
  T, B = a_TBH.shape[:2]
  return jnp.dot(
    a_TBH.reshape(T * B, -1).T, b_TBG.reshape(T * B, -1), preferred_element_type=out_dtype
  )


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


def _step(h, c, xw_BG, valid_B, kernel_hh, scale_BH, cdt):
  """One step: returns the new carry ``(h, c)``, the output and the gate activations."""
  h_in = h if scale_BH is None else h * scale_BH
  z = xw_BG + jnp.dot(h_in.astype(cdt), kernel_hh, preferred_element_type=xw_BG.dtype)
  act = gate_activations(z)
  i, f, g, o = jnp.split(act, 4, axis=-1)
  c_new = f * c + i * g
  h_new = o * jnp.tanh(c_new)
  if valid_B is None:
    return h_new, c_new, h_new, act
  v = valid_B[:, None]
  return jnp.where(v, h_new, h), jnp.where(v, c_new, c), jnp.where(v, h_new, 0.0), act


def _forward(xw_TBG, kernel_hh, h0, c0, valid_TB, scale_BH, unroll):
  """The loop; residuals ``(act, c carries, h carries or None)``, each stacked over T."""
  cdt = kernel_hh.dtype
  padded = valid_TB is not None

  def body(carry, xs):
    h, c = carry
    xw, v = xs
    h, c, y, act = _step(h, c, xw, v, kernel_hh, scale_BH, cdt)
    return (h, c), (y, act, c, h if padded else None)

  (hT, cT), (ys, act, cs, hs) = jax.lax.scan(body, (h0, c0), (xw_TBG, valid_TB), unroll=unroll)
  # Without padding the h carries are the outputs.
  return (hT, cT), ys, (act, cs, ys if hs is None else hs)


def _shift_in(first_BX: Array, stacked_TBX: Array) -> Array:
  """``[first, stacked[0], ..., stacked[T-2]]``: the value entering each step."""
  return jnp.concatenate([first_BX[None], stacked_TBX[:-1]], axis=0)


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
  return (carry, ys), (res, h0, c0, kernel_hh, valid_TB, scale_BH)


def _bwd(unroll, saved, cotangents):
  (act, cs, hs), h0, c0, kernel_hh, valid_TB, scale_BH = saved
  (dhT, dcT), dys = cotangents
  # The carries entering each step, and tanh(c_t). At a padded step cs holds
  # the unchanged carry, not c_t; its coefficients are then never used (the
  # loop zeroes u and w there), they only need to be finite.
  c_prev, h_prev, tc = _shift_in(c0, cs), _shift_in(h0, hs), jnp.tanh(cs)
  cdt = kernel_hh.dtype
  kernel_t = kernel_hh.T
  # Everything that does not depend on the backward carry is computed here,
  # for all steps at once (large, parallel elementwise work); the loop keeps
  # only what the recurrence needs. With u = dL/dh_t and w = dL/dc_t:
  #   w_total = w + u * o (1 - tanh(c)^2)
  #   dz = [w_total, w_total, w_total, u] * [g i(1-i), c_prev f(1-f), i (1-g^2), tanh(c) o(1-o)]
  #   dL/dc_{t-1} = w_total * f,   dL/dh_{t-1} = dz @ W_hh^T
  i, f, g, o = jnp.split(act, 4, axis=-1)
  k_c = o * (1.0 - tc * tc)
  coef = jnp.concatenate(
    [g * i * (1.0 - i), c_prev * f * (1.0 - f), i * (1.0 - g * g), tc * o * (1.0 - o)], -1
  )
  v_TB1 = None if valid_TB is None else valid_TB[..., None].astype(coef.dtype)

  def body(carry, xs):
    dh, dc = carry  # cotangents of the carry leaving this step
    dy, k, cf, ft, v = xs
    if v is None:
      u, w = dh + dy, dc
    else:  # a padded step passes the cotangents through untouched
      u, w = (dh + dy) * v, dc * v
    w_total = w + u * k
    dz = jnp.concatenate([w_total, w_total, w_total, u], -1) * cf
    dh_in = jnp.dot(dz.astype(cdt), kernel_t, preferred_element_type=dz.dtype)
    dh_prev = dh_in if scale_BH is None else dh_in * scale_BH
    dc_prev = w_total * ft
    if v is not None:
      dh_prev, dc_prev = dh_prev + dh * (1.0 - v), dc_prev + dc * (1.0 - v)
    return (dh_prev, dc_prev), (dz, None if scale_BH is None else dh_in)

  xs = (dys, k_c, coef, f, v_TB1)
  (dh0, dc0), (dz_TBG, dh_in_TBH) = jax.lax.scan(body, (dhT, dcT), xs, reverse=True, unroll=unroll)
  h_in = h_prev if scale_BH is None else h_prev * scale_BH
  # The weight gradient: one [H, T*B] @ [T*B, 4H] matmul over all steps,
  # outside the loop.
  dkernel = contract_steps(h_in.astype(cdt), dz_TBG.astype(cdt), jnp.float32)
  dkernel = dkernel.astype(kernel_hh.dtype)
  dscale = None if scale_BH is None else jnp.sum(dh_in_TBH * h_prev, axis=0)
  return dz_TBG, dkernel, dh0, dc0, None, dscale


lstm_recurrence.defvjp(_fwd, _bwd)


def reference_recurrence(
  xw_TBG: Array, kernel_hh: Array, h0: Array, c0: Array, valid_TB, scale_BH, unroll: int
) -> tuple[tuple[Array, Array], Array]:
  """The same function differentiated by autodiff (for tests and benchmarks)."""
  carry, ys, _ = _forward(xw_TBG, kernel_hh, h0, c0, valid_TB, scale_BH, unroll)
  return carry, ys
