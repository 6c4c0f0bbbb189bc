"""Host-memory tuning for the CPU backend: keep freed blocks in the heap.

XLA's CPU backend allocates every large intermediate (the scan's stacked
outputs, activations, gradients) afresh at each step. glibc serves blocks
above its mmap threshold with a new ``mmap`` and unmaps them when freed, so
each step would page-fault all of that memory in again.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Set to 1 to leave the C allocator alone.
NO_MALLOPT_ENV = "LSTMDROP_NO_MALLOPT"
#: The equivalent environment of a child process (glibc reads it at start).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def keep_freed_host_memory() -> bool:
  """Makes glibc reuse large freed blocks instead of returning them to the OS.

  Raising the mmap and trim thresholds keeps freed memory in the heap for the
  next step: on a 2-core CPU, 15-30% off the benchmark's training steps, with
  bit-identical results (docs/PERFORMANCE.md). The cost is that the process
  keeps its peak heap size. Equivalent to starting Python with ``MALLOC_ENV``.

  Process-wide, so only entry points call it (the training CLI, the
  experiment scripts, the benchmarks), never library code. Does nothing
  (returns False) off glibc, or when ``LSTMDROP_NO_MALLOPT=1``.
  """
  if os.environ.get(NO_MALLOPT_ENV) == "1" or not sys.platform.startswith("linux"):
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):  # not glibc (e.g. musl)
    return False
  big = 1 << 30
  return bool(mallopt(_M_MMAP_THRESHOLD, big)) and bool(mallopt(_M_TRIM_THRESHOLD, big))
