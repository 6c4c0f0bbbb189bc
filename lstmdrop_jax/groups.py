"""``GroupDropout``: the dropout of a group of runs trained together (``train.train_runs``).

The runs of a group share one compiled step, so their ``DropoutConfig``s must
agree on everything static. Where they differ in which placements are
time-locked, or in ``per_gate``, ``groups.union`` makes a
``GroupDropout``: each run's flags are leaves of the config, like its rates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from lstmdrop_jax.placements import LOCKABLE, RATE_FIELDS, DropoutConfig


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class GroupDropout(DropoutConfig):
  """The dropout of a group of runs trained together that differ in which placements
  are time-locked, or in ``per_gate`` (``union`` makes it).

  ``time_locked`` names what every run locks; each placement of ``per_run`` is
  locked or not by the run's own flag in ``locks``, a leaf like the rates, so the
  runs share one compiled step. Such a placement draws both masks and keeps one
  per run (``sequence_mask``), so a run draws exactly the masks it draws alone.
  Likewise ``gate_flag`` (None when the runs agree on ``per_gate``) is each run's
  ``per_gate`` as a leaf; the group's masks then have a gate axis, and a run
  without per-gate masks repeats its one mask over it (``gate_mask``).
  """

  per_run: tuple[str, ...] = ()
  locks: tuple[Any, ...] = ()
  gate_flag: Any = None

  def __post_init__(self):
    super().__post_init__()
    bad = [p for p in self.per_run if p not in LOCKABLE or p in self.time_locked]
    if bad or len(self.locks) != len(self.per_run):
      raise ValueError(
        f"GroupDropout: per_run {self.per_run} must name lockable placements not in "
        f"time_locked, with one lock each (got {len(self.locks)})"
      )
    if self.gate_flag is not None and not self.per_gate:
      raise ValueError("GroupDropout: a per-run gate_flag needs per_gate=True (the gate axis)")
    # Static: whether gate_flag is a leaf (its value may be None in a tree of non-arrays).
    object.__setattr__(self, "_gated", self.gate_flag is not None)

  def is_time_locked(self, placement: str) -> Any:
    if placement in self.per_run:
      return self.locks[self.per_run.index(placement)]
    return placement in self.time_locked

  def is_per_gate(self) -> Any:
    return self.gate_flag if self._gated else self.per_gate

  def _flags(self) -> tuple:
    return (*self.locks, *((self.gate_flag,) if self._gated else ()))

  def _with_flags(self, rates: DropoutConfig) -> GroupDropout:
    """This group's form of ``rates`` (a run's config, or a group's): its rates, and its
    locks and per-gate flag for the placements that are per run here."""
    values = [getattr(rates, n) for n in RATE_FIELDS]
    locks = [rates.is_time_locked(p) for p in self.per_run]
    gate = (rates.is_per_gate(),) if self._gated else ()
    return self.tree_unflatten(self._static(), (*values, *locks, *gate))

  def member(self, run: DropoutConfig) -> GroupDropout:
    return self._with_flags(run)

  def with_rates_of(self, rates: DropoutConfig) -> GroupDropout:
    active = self.active()
    out = self._with_flags(rates)
    for n in RATE_FIELDS:
      if n not in active:
        object.__setattr__(out, n, 0.0)
    return out

  def as_arrays(self, dtype=jnp.float32) -> GroupDropout:
    leaves, static = jax.tree.flatten(super().as_arrays(dtype))
    n = len(RATE_FIELDS)
    return jax.tree.unflatten(static, [*leaves[:n], *(jnp.asarray(f, bool) for f in leaves[n:])])

  def _static(self) -> tuple:
    return self.time_locked, self.per_gate, self.per_run, self._gated

  def tree_flatten(self):
    return (*(getattr(self, n) for n in RATE_FIELDS), *self._flags()), self._static()

  @classmethod
  def tree_unflatten(cls, static, leaves):
    time_locked, per_gate, per_run, gated = static
    n = len(RATE_FIELDS)
    obj = super().tree_unflatten((time_locked, per_gate), leaves[:n])
    object.__setattr__(obj, "per_run", per_run)
    object.__setattr__(obj, "locks", tuple(leaves[n : n + len(per_run)]))
    object.__setattr__(obj, "gate_flag", leaves[n + len(per_run)] if gated else None)
    object.__setattr__(obj, "_gated", gated)
    return obj


def union(configs: Sequence[DropoutConfig]) -> DropoutConfig:
  """A config that uses every placement any of ``configs`` uses (at its largest rate):
  the placements of a group of runs trained together. Where the runs differ in
  ``time_locked`` or ``per_gate``, a ``GroupDropout``: those placements take each run's
  flag."""
  rates = {n: max(float(getattr(c, n)) for c in configs) for n in RATE_FIELDS}
  every = [p for p in LOCKABLE if all(p in c.time_locked for c in configs)]
  some = [p for p in LOCKABLE if p not in every and any(p in c.time_locked for c in configs)]
  gates = {c.per_gate for c in configs}
  if not some and len(gates) == 1:
    return DropoutConfig(**rates, time_locked=tuple(every), per_gate=gates.pop())
  return GroupDropout(
    **rates,
    time_locked=tuple(every),
    per_gate=True in gates,
    per_run=tuple(some),
    locks=(False,) * len(some),
    gate_flag=False if len(gates) > 1 else None,
  )
