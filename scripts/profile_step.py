"""Where a training step's time goes: a profiler trace of a few steps, summed by kernel.

Builds the same step as ``scripts/bench.py`` (``bench_models.jax_step``: our
model or Flax's stock stack), traces ``--steps`` steps with ``jax.profiler``
and prints, per configuration: wall time per step, the kernels' summed time
per step (on a GPU the gap between the two is launch and host overhead), and
the ``--top`` kernels by time with their launches per step. On a CPU the
"kernels" are XLA's thunks, some of which overlap on other threads.

  python scripts/profile_step.py --configs seed_clf zaremba_medium --json prof.json
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import tempfile
import time
from pathlib import Path

import bench_models

from lstmdrop_jax.host_memory import keep_freed_host_memory

# Host-side wrappers in a CPU trace: they contain the thunks that do the work.
_CPU_WRAPPERS = ("ThunkExecutor", "$", "SlinkyThreadPool", "PjitFunction", "while")


def kernel_events(trace: dict) -> tuple[str, list[dict]]:
  """The device's kernel events of a perfetto trace, or the host's thunks without a device.

  With several devices only the first is read (the benchmark's step runs on one).
  """
  names = {
    e["pid"]: e["args"]["name"]
    for e in trace["traceEvents"]
    if e.get("ph") == "M" and e.get("name") == "process_name"
  }
  spans = [e for e in trace["traceEvents"] if e.get("ph") == "X" and "dur" in e]
  device = [pid for pid, n in names.items() if n.startswith("/device:")]
  if device:  # a GPU's pid also holds summary rows ("XLA Ops", ...): keep its streams
    pid = device[0]
    threads = {
      e["tid"]: e["args"]["name"]
      for e in trace["traceEvents"]
      if e.get("ph") == "M" and e.get("name") == "thread_name" and e.get("pid") == pid
    }
    streams = {t for t, n in threads.items() if n.lower().startswith("stream")}
    if not streams:
      raise ValueError(
        f"no stream rows in the trace of {names[pid]} (threads: {sorted(threads.values())}); "
        "this JAX's trace layout is not the one profile_step.py knows"
      )
    return names[pid], [e for e in spans if e["pid"] == pid and e.get("tid") in streams]
  return "host", [e for e in spans if not e["name"].startswith(_CPU_WRAPPERS)]


def profile(name: str, impl: str, dtype: str, unroll, n: int, top: int) -> dict:
  import jax

  step, state, batch, key = bench_models.jax_step(name, impl, dtype, unroll)
  for _ in range(3):  # compile and warm up
    state, _ = step(state, batch, key)
  jax.block_until_ready(state)
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      t0 = time.perf_counter()
      for _ in range(n):
        state, _ = step(state, batch, key)
      jax.block_until_ready(state)
      wall = (time.perf_counter() - t0) / n
    path = max(Path(d).rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    with gzip.open(path) as f:
      trace = json.load(f)
  where, events = kernel_events(trace)
  total, count = collections.Counter(), collections.Counter()
  for e in events:
    total[e["name"]] += e["dur"]
    count[e["name"]] += 1
  return {
    "config": name,
    "impl": impl,
    "dtype": dtype,
    "where": where,
    "wall_ms": 1e3 * wall,
    "kernel_ms": sum(total.values()) / n / 1e3,
    "launches": sum(count.values()) / n,
    "top": [
      {"name": k, "ms": v / n / 1e3, "per_step": count[k] / n} for k, v in total.most_common(top)
    ],
  }


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--configs", nargs="+", default=["seed_clf"], choices=list(bench_models.CONFIGS))
  p.add_argument("--impl", default="ours", choices=bench_models.JAX_IMPLS)
  p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  p.add_argument("--unroll", type=int, default=None)
  p.add_argument("--steps", type=int, default=10, help="traced steps")
  p.add_argument("--top", type=int, default=15, help="kernels listed per configuration")
  p.add_argument("--json", type=Path, default=None)
  args = p.parse_args(argv)
  if args.steps < 1 or args.top < 1:
    p.error("--steps and --top must be >= 1")
  keep_freed_host_memory()  # as bench.py's measurements and the training CLI
  out = []
  for name in args.configs:
    r = profile(name, args.impl, args.dtype, args.unroll, args.steps, args.top)
    out.append(r)
    print(
      f"\n{name} ({args.impl}, {args.dtype}) on {r['where']}: {r['wall_ms']:.3f} ms/step wall,"
      f" kernels {r['kernel_ms']:.3f} ms/step in {r['launches']:.0f} launches"
    )
    for k in r["top"]:
      print(f"  {k['ms']:8.3f} ms  x{k['per_step']:6.0f}  {k['name'][:110]}")
  if args.json:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
