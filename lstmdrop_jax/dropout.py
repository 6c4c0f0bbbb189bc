"""Dropout in one namespace: the public names of ``placements``, ``groups`` and ``masks``.

* ``placements``: the placement registry (``REGISTRY`` and the tuples derived
  from it), rate checks and ``DropoutConfig``.
* ``groups``: ``GroupDropout``, the dropout of runs trained together that
  differ in which placements are time-locked or in ``per_gate``.
* ``masks``: mask keys, keep-masks (threefry bits or a keyed hash), zoneout
  masks, per-gate masks and inverted dropout.

To replace a mask function (e.g. to record the masks drawn), patch it in ``masks``,
where the library looks it up.
"""

from lstmdrop_jax.groups import GroupDropout
from lstmdrop_jax.masks import (
  GATES,
  Array,
  apply_mask,
  batch_shard,
  dropout,
  gate_mask,
  keep_mask,
  keep_mask16,
  mask_key,
  sequence_mask,
  zone_mask,
)
from lstmdrop_jax.placements import (
  BY_NAME,
  LOCKABLE,
  MASK_STREAMS,
  PLACEMENTS,
  RATE_FIELDS,
  REGISTRY,
  DropoutConfig,
  Placement,
  check_rate,
  is_off,
)

__all__ = [
  "BY_NAME",
  "GATES",
  "LOCKABLE",
  "MASK_STREAMS",
  "PLACEMENTS",
  "RATE_FIELDS",
  "REGISTRY",
  "Array",
  "DropoutConfig",
  "GroupDropout",
  "Placement",
  "apply_mask",
  "batch_shard",
  "check_rate",
  "dropout",
  "gate_mask",
  "is_off",
  "keep_mask",
  "keep_mask16",
  "mask_key",
  "sequence_mask",
  "zone_mask",
]
