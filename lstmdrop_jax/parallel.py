"""Devices and hosts: one ``Mesh`` over all devices, shardings, multi-host start.

Two ways to use the mesh's one axis, ``"devices"``:

* ``"data"`` (default): data parallel. Every batch is split on its batch
  axis; parameters and optimiser state are replicated. Each device runs the
  training step on its rows (``shard_map``; ``steps.make_train_step``'s
  ``batch_axis``), and the steps sum their gradients and metrics over the
  devices. Evaluation is split by XLA (GSPMD). With one device this is plain
  single-device training.
* ``"runs"``: the K runs that ``train_runs`` trains together (seeds, rates)
  are split over the devices on their leading axis; each device trains
  whole runs. A K that is not a multiple of the device count is padded
  with copies of the group's first run, which write nothing.
* ``"auto"``: one of the two, by ``plan``.

Dropout masks do not depend on the layout: each device of a split batch
draws its rows of the whole batch's masks (``dropout.batch_shard``), so a run
on 4 devices draws the masks it draws on 1.

Multi-host: ``initialize_distributed`` starts ``jax.distributed`` from
explicit flags or a SLURM allocation. Every host builds each epoch's batch
order (a function of seed and epoch only) and copies only the rows of its own
devices (``put``); metrics come back reduced by XLA; only process 0 writes
run-folder files (``is_main_process``), while all processes take part in
Orbax checkpoints.

CPU cores: a CPU is one JAX device, and a small LSTM's recurrence runs on
one core of it (its per-step matmuls are too small to split). The entry
points (the command lines and experiment scripts) therefore present a CPU as
one JAX device per usable core (``setup_cpu_devices``: ``--cpu-devices N``,
else ``$LSTMDROP_CPU_DEVICES``, else ``os.sched_getaffinity``; 1 switches it
off). Library functions never change that setting; they use the devices they
find. With several CPU devices, ``parallel="auto"`` (``plan``) gives each
core whole runs when a group has at least as many runs as cores (the group
padded with copies of its first run, whose results are discarded), else
splits the batch over as many cores as divide it; each device loops over
its runs one at a time (``map_runs``). Either differs from one device in
float rounding, as any change of device count does: a split batch sums its
gradient in parts, and XLA compiles each device's loop over its share of
the runs on its own (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "devices"
MODES = ("data", "runs")
#: Overrides the entry points' default of one CPU device per core (1: off).
CPU_DEVICES_ENV = "LSTMDROP_CPU_DEVICES"


def use_cpu_devices(n: int | None) -> None:
  """Presents the CPU as ``n`` JAX devices (None: leave JAX's default, one).

  Call it before anything touches JAX's backends (before the first array or
  ``jax.devices()``). Then ``make_mesh`` spans the n devices and training is
  data parallel across them: on a CPU with n cores, each core runs the
  recurrence for its share of the batch (``docs/PERFORMANCE.md``). Has no
  effect on which accelerator is used when there is one; the CPU devices are
  then not part of the mesh.
  """
  if n is None:
    return
  if not isinstance(n, int) or isinstance(n, bool) or n < 1:
    raise ValueError(f"cpu_devices must be an int >= 1 (e.g. the number of cores), got {n!r}")
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:
    raise ValueError(
      f"cpu_devices={n} came too late: JAX's backends were already started in this "
      "process. Call parallel.use_cpu_devices before any JAX operation (or pass "
      "--cpu-devices on the command line)"
    ) from None


def usable_cores() -> int:
  """The cores this process may run on (its CPU affinity, e.g. a SLURM allocation's)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def setup_cpu_devices(flag: int | None = None) -> int | None:
  """The entry points' CPU layout: one JAX device per usable core, unless told otherwise.

  ``flag`` (``--cpu-devices``) wins, then ``$LSTMDROP_CPU_DEVICES``; once JAX's
  backends have started, either is refused (``ValueError``) unless the CPU
  already has that many devices. Without either, the CPU becomes
  ``usable_cores()`` devices, or stays as it is when the calling program has
  already started JAX or ``XLA_FLAGS`` sets the count. Only the CPU backend
  is affected: with an accelerator, the mesh is the accelerator's devices.

  Returns:
    The CPU device count asked for (None: left as it was).
  """
  if flag is None and os.environ.get(CPU_DEVICES_ENV, "").strip():
    text = os.environ[CPU_DEVICES_ENV].strip()
    try:
      flag = int(text)
    except ValueError:
      flag = -1
    if flag < 1:
      raise ValueError(
        f"${CPU_DEVICES_ENV}={text!r} is not a device count; set it to an int >= 1 (1: one "
        "CPU device, the cores shared by XLA's threads) or unset it (one device per core)"
      )
  if flag is not None:
    try:
      use_cpu_devices(flag)
    except ValueError:  # JAX has started: refused unless it already has that many
      if len(jax.devices("cpu")) != flag:
        raise
    return flag
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return None  # set by the user in XLA's own way
  try:
    use_cpu_devices(usable_cores())
  except ValueError:  # JAX was started by the calling program: use what it set up
    return None
  return usable_cores()


def initialize_distributed(
  coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
  """Starts multi-host JAX; returns whether it did.

  Explicit arguments win; else, inside a SLURM allocation of several tasks,
  ``jax.distributed.initialize()`` reads the cluster from SLURM's variables;
  else (one process) nothing happens. ``$LSTMDROP_HEARTBEAT_TIMEOUT``: the
  seconds after which the others count a silent process as lost (JAX's
  default, 100, when unset).

  Raises:
    ValueError: only some of the three explicit arguments are given.
  """
  explicit = (coordinator, num_processes, process_id)
  if any(a is not None for a in explicit):
    if any(a is None for a in explicit):
      raise ValueError(
        "multi-host needs all of --coordinator (host:port of process 0), --num-processes "
        "and --process-id, or none of them inside a SLURM allocation"
      )
    jax.distributed.initialize(coordinator, num_processes, process_id, **_heartbeat())
    return True
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize(**_heartbeat())
    return True
  return False


def _heartbeat() -> dict[str, int]:
  value = os.environ.get("LSTMDROP_HEARTBEAT_TIMEOUT")
  if value is None:
    return {}
  if not value.isdigit() or int(value) < 1:
    raise ValueError(
      f"LSTMDROP_HEARTBEAT_TIMEOUT={value!r} must be a whole number of seconds >= 1; "
      "unset it for JAX's default (100)"
    )
  return {"heartbeat_timeout_seconds": int(value)}


def is_main_process() -> bool:
  """Only process 0 writes run-folder files."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """A barrier across hosts (a no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def make_mesh() -> Mesh:
  """A one-axis mesh over every device of every host."""
  return Mesh(np.asarray(jax.devices()), (AXIS,))


def plan(mode: str, *, runs: int, batch_size: int, split_pays: bool = True) -> tuple[str, Mesh]:
  """The layout and mesh for ``runs`` runs trained together.

  ``"data"`` and ``"runs"`` use every device (``check_layout`` says whether
  they can). ``"auto"``: on several CPU devices of one process, ``"runs"``
  when there are at least as many runs as devices (``padding`` evens them
  out), else ``"data"`` over the most devices that divide the batch (one
  device unless ``split_pays``: ``platform.cpu_batch_split_pays``); anywhere
  else (accelerators, several hosts), ``"data"`` over every device.
  """
  if mode not in (*MODES, "auto"):
    raise ValueError(f"parallel must be one of {[*MODES, 'auto']}, got {mode!r}")
  devices = jax.devices()
  one_cpu_host = devices[0].platform == "cpu" and jax.process_count() == 1
  if mode != "auto" or len(devices) == 1 or not one_cpu_host:
    return ("data" if mode == "auto" else mode), make_mesh()
  if runs >= len(devices):
    return "runs", make_mesh()
  used = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0) if split_pays else 1
  return "data", Mesh(np.asarray(devices[:used]), (AXIS,))


def padding(mode: str, mesh: Mesh, runs: int) -> int:
  """Runs to add so that ``runs`` split evenly over the mesh (``"runs"`` only)."""
  return -runs % mesh.size if mode == "runs" else 0


def check_layout(mode: str, mesh: Mesh, *, runs: int, batch_size: int) -> None:
  """Raises ``ValueError`` when the work cannot be split over the mesh (runs are
  padded, see ``padding``; a batch must divide)."""
  n = mesh.size
  if mode not in MODES:
    raise ValueError(f"parallel must be one of {list(MODES)}, got {mode!r}")
  if mode == "data" and batch_size % n:
    raise ValueError(
      f"batch_size {batch_size} is not divisible by the {n} devices; data parallelism splits "
      f"each batch evenly, so use a multiple of {n} (e.g. {n * -(-batch_size // n)})"
    )


def shardings(mode: str, mesh: Mesh) -> dict[str, NamedSharding]:
  """Where each kind of array lives.

  Returns:
    ``state`` (stacked ``[K, ...]`` train states and keys), ``batch``
    (``[K, steps, B, ...]`` training batches), ``eval`` (``[K, n, B, ...]``
    evaluation batches whose batch axis can be split), ``replicated``.
  """
  rep = NamedSharding(mesh, P())
  if mode == "runs":
    lead = NamedSharding(mesh, P(AXIS))
    return {"state": lead, "batch": lead, "eval": lead, "replicated": rep}
  split_batch = NamedSharding(mesh, P(None, None, AXIS))
  return {"state": rep, "batch": split_batch, "eval": split_batch, "replicated": rep}


def check_runs_at_once(at_once: int | None) -> None:
  """Raises ``ValueError`` unless ``at_once`` is None or an int >= 1 (``map_runs``)."""
  if at_once is not None and (
    isinstance(at_once, bool) or not isinstance(at_once, int) or at_once < 1
  ):
    raise ValueError(
      f"runs_at_once must be an int >= 1 (or unset: 1 on a CPU, all on an accelerator), "
      f"got {at_once!r}"
    )


def map_runs(fn: Any, mode: str, mesh: Mesh, *, runs: int, at_once: int | None = None) -> Any:
  """``fn`` mapped over the leading (runs) axis of its arguments and results.

  ``at_once``: how many of a device's runs one pass computes together
  (vmapped); each device loops over its runs in passes (``lax.map``). None:
  one on a CPU, all on an accelerator. A CPU gains nothing from wide vmaps
  (its cores are already split by whole runs or by batch), and one run's
  arrays stay in its caches where a group's do not: the over-fitting grid's
  85 runs train 1.19 times as fast one at a time on one device, and 1.68
  times with a device per core (docs/PERFORMANCE.md). A run computed alone
  in its pass also rounds as it does trained on its own.

  Raises:
    ValueError: ``at_once`` below 1.
  """
  check_runs_at_once(at_once)
  if at_once is None and mesh.devices.flat[0].platform != "cpu":
    return jax.vmap(fn)
  at_once = at_once or 1
  per_device = runs // mesh.size if mode == "runs" else runs
  if at_once > 1 and at_once >= per_device:  # one at a time is always a loop, even of one
    return jax.vmap(fn)  # the SPMD partitioner splits the runs over the devices

  def loop(*args):
    return jax.lax.map(lambda a: fn(*a), args, batch_size=None if at_once == 1 else at_once)

  if mode != "runs":
    return loop
  # Each device loops over its own runs (a loop over the sharded axis itself
  # would gather every run on every device). The runs are independent, so the
  # loop needs no collectives and no varying-axis checks.
  return jax.shard_map(loop, mesh=mesh, in_specs=P(AXIS), out_specs=P(AXIS), check_vma=False)


def put(tree: Any, sharding: NamedSharding) -> Any:
  """Host numpy arrays -> global arrays; each host copies only its devices' rows."""

  def one(a):
    a = np.asarray(a)
    spec = sharding.spec
    if len(spec) > a.ndim:  # a small array (e.g. [K] flags) with fewer axes than the spec
      return jax.make_array_from_callback(
        a.shape, NamedSharding(sharding.mesh, P(*spec[: a.ndim])), lambda idx: a[idx]
      )
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

  return jax.tree.map(one, tree)


def stack(trees: Sequence[Any]) -> Any:
  """The runs' pytrees stacked along a new leading axis (``[K, ...]`` leaves)."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


class Rows:
  """Run ``k``'s slice of stacked states, ``rows[k]``, for checkpoints.

  When this process holds every shard, the states come to the host in one copy,
  on first use, and are sliced there: slicing each leaf on the devices is a
  dispatch (and a compile for each new layout) per leaf and run. Otherwise the
  slices are taken on the devices, where every process takes part.
  """

  def __init__(self, states: Any):
    self.states, self._host = states, None
    self._local = all(a.is_fully_addressable for a in jax.tree.leaves(states))

  def __getitem__(self, k: int) -> Any:
    if not self._local:
      return jax.tree.map(lambda a: a[k], self.states)
    if self._host is None:
      self._host = jax.device_get(self.states)
    return jax.tree.map(lambda a: a[k], self._host)
