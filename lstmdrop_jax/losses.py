"""Losses as summed metrics, and a linear softmax head's cross-entropy in blocks of rows.

``classification_metrics`` and ``lm_metrics`` score logits: sums (loss, correct count,
example or token count) that the steps add up on device.

A language model's head turns ``[N, H]`` features into ``[N, V]`` logits. At PTB's
sizes (batch 20, 35 steps, 10,000 words) that is 28 MB of logits, and as much again
for their softmax and its gradient: more than a CPU's cache holds, so every pass over
them runs at memory speed, and they push the rest of the step out of the cache too.
``softmax_xent_sum`` holds one block of rows at a time. Its forward pass computes, block
by block, the loss and its gradients with respect to the features, the kernel and the
bias; its backward pass only scales them by the cotangent. That is the work of the
plain head (three products), in buffers a fraction of the size. Only differentiation
takes the blocked path: called for its value alone, it is ``plain_xent_sum``, all rows at
once. Each block also adds its share to the ``[V, H]`` kernel gradient, one more
pass over that array: use the fewest blocks whose logits fit the cache.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
Metrics = dict[str, Array]


def classification_metrics(logits: Array, y: Array, mask: Array) -> Metrics:
  """Summed loss, correct count and example count over the unmasked rows.

  ``logits`` ``[B]`` is one sigmoid logit (binary), ``[B, K]`` softmax logits.
  """
  if logits.ndim == 1:
    loss_B = optax.sigmoid_binary_cross_entropy(logits, y.astype(logits.dtype))
    pred_B = (logits > 0).astype(y.dtype)
  else:
    loss_B = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    pred_B = jnp.argmax(logits, -1).astype(y.dtype)
  w = mask.astype(jnp.float32)
  return {
    "loss_sum": jnp.sum(loss_B * w),
    "correct": jnp.sum((pred_B == y) * w),
    "count": jnp.sum(w),
  }


def lm_metrics(logits_BTV: Array, y_BT: Array, mask_BT: Array | None = None) -> Metrics:
  """Summed negative log-likelihood and token count (over ``mask_BT`` if given)."""
  nll = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, y_BT)
  if mask_BT is None:
    return {"loss_sum": jnp.sum(nll), "count": jnp.asarray(nll.size, jnp.float32)}
  w = mask_BT.astype(jnp.float32)
  return {"loss_sum": jnp.sum(nll * w), "count": jnp.sum(w)}


def plain_xent_sum(
  features_NH: Array, kernel_VH: Array, bias_V: Array, targets_N: Array, weights_N: Array
) -> Array:
  """``sum_n weights_n * NLL_n`` of ``softmax(features @ kernel.T + bias)``, all rows at once."""
  logits_NV = features_NH @ kernel_VH.T + bias_V
  nll_N = optax.softmax_cross_entropy_with_integer_labels(logits_NV, targets_N)
  return jnp.sum(nll_N * weights_N)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def softmax_xent_sum(
  features_NH: Array,
  kernel_VH: Array,
  bias_V: Array,
  targets_N: Array,
  weights_N: Array,
  block_rows: int,
) -> Array:
  """``plain_xent_sum`` whose gradient is computed ``block_rows`` rows at a time.

  Args:
    features_NH: the head's input, ``[N, H]``.
    kernel_VH: its kernel, one row per class (a tied embedding matrix as it is; a
      ``Dense`` kernel transposed).
    bias_V: its bias.
    targets_N: int class of each row.
    weights_N: each row's weight (0 for padding).
    block_rows: rows per block; ``N`` need not be a multiple.

  Returns:
    The weighted sum of the rows' negative log-likelihoods (float32 scalar).
  """
  del block_rows  # not differentiated: the rows at once
  return plain_xent_sum(features_NH, kernel_VH, bias_V, targets_N, weights_N)


def _forward(features_NH, kernel_VH, bias_V, targets_N, weights_N, block_rows):
  n, h = features_NH.shape
  blocks = -(-n // block_rows)
  pad = blocks * block_rows - n

  def rows(a):  # [N, ...] -> [blocks, block_rows, ...]; padding rows weigh 0
    a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
    return a.reshape(blocks, block_rows, *a.shape[1:])

  dtype = jnp.result_type(features_NH, kernel_VH, bias_V, weights_N)
  kernel = kernel_VH.astype(dtype)
  bias = bias_V.astype(dtype)

  def block(acc, xs):
    f_RH, y_R, w_R = xs
    d_kernel, d_bias = acc
    logits_RV = f_RH @ kernel.T + bias
    top_R1 = jnp.max(logits_RV, -1, keepdims=True)
    e_RV = jnp.exp(logits_RV - top_R1)
    total_R1 = jnp.sum(e_RV, -1, keepdims=True)
    target_R = jnp.take_along_axis(logits_RV, y_R[:, None], -1)[:, 0]
    nll_R = jnp.log(total_R1[:, 0]) + top_R1[:, 0] - target_R
    # d(w * NLL)/d logits = w * (softmax - one_hot(target)).
    d_RV = (e_RV / total_R1 - jax.nn.one_hot(y_R, kernel.shape[0], dtype=dtype)) * w_R[:, None]
    return (d_kernel + d_RV.T @ f_RH, d_bias + d_RV.sum(0)), (d_RV @ kernel, nll_R)

  init = (jnp.zeros_like(kernel), jnp.zeros_like(bias))
  xs = (rows(features_NH.astype(dtype)), rows(targets_N), rows(weights_N.astype(dtype)))
  (d_kernel, d_bias), (d_f, nll) = jax.lax.scan(block, init, xs)
  d_features = d_f.reshape(blocks * block_rows, h)[:n]
  nll_N = nll.reshape(blocks * block_rows)[:n]
  loss = jnp.sum(nll_N * weights_N.astype(dtype))
  residuals = (
    d_features.astype(features_NH.dtype),
    d_kernel.astype(kernel_VH.dtype),
    d_bias.astype(bias_V.dtype),
    nll_N.astype(weights_N.dtype),
  )
  return loss, residuals


def _backward(block_rows, residuals, g):
  del block_rows
  d_features, d_kernel, d_bias, nll_N = residuals
  # The targets are integers: no cotangent (None).
  cast = lambda a: (g * a).astype(a.dtype)
  return (cast(d_features), cast(d_kernel), cast(d_bias), None, cast(nll_N))


softmax_xent_sum.defvjp(_forward, _backward)
