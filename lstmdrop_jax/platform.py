"""Every choice the library makes for the machine it runs on, each beside its measured reason
and the command that measures it.

The rest of the library asks this module; none of it tests the backend itself. Figures
are from docs/PERFORMANCE.md, which names the machine and commit of each.

=========================  ========================================================
choice                     where it acts
=========================  ========================================================
``default_unroll``         time steps per scan iteration when a model names none
``cpu_batch_split_pays``   ``parallel.plan("auto")``: one run's batch over CPU cores
``flatten_time_and_batch`` 2-D matmuls over ``[T*B, ...]`` blocks (``fused.py``)
``sum_of_squares``         the gradient norm by rows (``optim.global_norm``)
``keep_freed_host_memory`` glibc keeps freed blocks (entry points only)
=========================  ========================================================

Dropout masks with a batch axis are drawn from a 16-bit keyed hash of each entry's index
rather than threefry bits on every backend (``masks._uniform16``, where the measured
reason is given): the draw is part of what a seed means, so it cannot differ by machine.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import os
import sys
from collections.abc import Iterator

import jax
import jax.numpy as jnp

# --- Time steps per scan iteration. ---------------------------------------------------


def default_unroll() -> int:
  """8 on GPUs and TPUs, where the recurrence is latency-bound and unrolling hides the
  loop's overhead; 1 on CPUs, where larger unrolls gave no measurable gain and compile
  longer. Measured by ``python scripts/bench.py --device cpu --impls ours --unroll 1``
  against the same with ``--unroll 8``."""
  return 1 if jax.default_backend() == "cpu" else 8


# --- One run's batch over CPU cores. --------------------------------------------------

#: Whether splitting one run's batch over the CPU's cores (``parallel.plan``'s "auto")
#: makes a task's step faster, by task name (``tasks.task_name``). A classifier: yes,
#: each core gets a recurrent loop of its own. A language model: no, its softmax
#: matmuls already use every core and a split adds an all-reduce of the embedding and
#: softmax gradients (ptb_small's step was slower split). Measured by ``python
#: scripts/bench.py cores`` (the classifiers' grid on one device against one per core)
#: and ``python scripts/bench.py --device cpu --configs ptb_small --impls ours flax
#: --shard ours`` (our language model's step split, Flax's whole).
_CPU_BATCH_SPLIT_PAYS = {"classification": True, "language_model": False}


def cpu_batch_split_pays(task_name: str) -> bool:
  """Whether ``task_name``'s runs split their batch over the cores of one CPU host."""
  return _CPU_BATCH_SPLIT_PAYS[task_name]


# --- 2-D matmuls over time and batch. -------------------------------------------------

_BATCH_SPLIT: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
  "batch_split", default=None
)


@contextlib.contextmanager
def batch_split_over_devices(split: bool) -> Iterator[None]:
  """Within it, steps are traced knowing whether their batch axis is split over
  devices (the training loop knows its layout: whole runs per device split no
  batch). Outside, a program with several devices is taken to split it."""
  token = _BATCH_SPLIT.set(split)
  try:
    yield
  finally:
    _BATCH_SPLIT.reset(token)


def flatten_time_and_batch() -> bool:
  """Whether ``[T, B, ...]`` blocks are flattened to ``[T*B, ...]`` for matmuls.

  Flattening makes the products, and the gradients autodiff derives from them, plain
  2-D matmuls: XLA's CPU backend runs a contraction over two dimensions (time and
  batch) markedly slower, about a tenth of a seed_clf training step (``python
  scripts/bench.py profile --configs seed_clf`` names the contraction's thunks). But
  merging T and B puts a sharded batch axis inside the merged one, which XLA can only
  honour by gathering the batch on every device, so when the batch is split over
  devices (``batch_split_over_devices``) the 3-D form is kept. The same product either way;
  the rounding may differ.
  """
  split = _BATCH_SPLIT.get()
  return not (jax.device_count() > 1 if split is None else split)


# --- The gradient norm. ---------------------------------------------------------------


def sum_of_squares(x: jax.Array) -> jax.Array:
  """The sum of ``x``'s squares: along its last axis by a product with a vector of ones,
  then over the rest.

  Summed over a whole 2-D leaf at once, XLA's CPU backend computes the sum as a 32x32
  windowed reduction first, which is slow on wide leaves: 13 ms for a language model's
  ``[200, 10000]`` softmax kernel against 1.2 ms by rows, a sixth of ptb_small's
  training step (``python scripts/bench.py profile --configs ptb_small``). The
  product is in full float32 (no TF32 on GPUs), so every backend computes the same sum.
  """
  x2 = jnp.square(x)
  if x2.ndim < 2:
    return jnp.sum(x2)
  ones = jnp.ones(x2.shape[-1], x2.dtype)
  return jnp.sum(jnp.dot(x2, ones, precision=jax.lax.Precision.HIGHEST))


# --- Host memory. ---------------------------------------------------------------------

#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Set to 1 to leave the C allocator alone.
NO_MALLOPT_ENV = "LSTMDROP_NO_MALLOPT"
#: The equivalent environment of a child process (glibc reads it at start).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def keep_freed_host_memory() -> bool:
  """Makes glibc reuse large freed blocks instead of returning them to the OS.

  XLA's CPU backend allocates every large intermediate (the scan's stacked outputs,
  activations, gradients) afresh at each step. glibc serves blocks above its mmap
  threshold with a new ``mmap`` and unmaps them when freed, so each step would
  page-fault all of that memory in again. Raising the mmap and trim thresholds keeps
  freed memory in the heap for the next step: on a 2-core CPU, 15-30% off the
  benchmark's training steps, with bit-identical results (``python scripts/bench.py
  --device cpu`` with and without ``LSTMDROP_NO_MALLOPT=1``). The cost is that the
  process keeps its peak heap size. Equivalent to starting Python with ``MALLOC_ENV``.

  Process-wide, so only entry points call it (the training CLI, the experiment
  scripts, the benchmarks), never library code. Does nothing (returns False) off
  glibc, or when ``LSTMDROP_NO_MALLOPT=1``.
  """
  if os.environ.get(NO_MALLOPT_ENV) == "1" or not sys.platform.startswith("linux"):
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):  # not glibc (e.g. musl)
    return False
  big = 1 << 30
  return bool(mallopt(_M_MMAP_THRESHOLD, big)) and bool(mallopt(_M_TRIM_THRESHOLD, big))
