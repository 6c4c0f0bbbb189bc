"""Training-step benchmarks. Each mode measures its candidates and their baseline in fresh
processes of one invocation, alternating over ``--rounds``, and prints their ratios.

* ``steps`` (the default): our training step (forward, backward, optimizer update, dropout 0.5
  at the three placements) against Flax's stock stack and PyTorch (cuDNN on a GPU); the models
  are in ``bench_models.py``.
* ``variants``: our step with each of ``bench_models.DROPOUT_PRESETS``, against the first.
* ``profile``: ``--steps`` steps traced by ``jax.profiler``: wall and summed kernel time per
  step (on a GPU the gap is launch and host overhead) and the ``--top`` kernels.
* ``cores``: ``experiments/overfit.py`` on one CPU device against one device per usable core,
  and whether both wrote the same table.

A step is timed after its first call and ``--warmup`` more, as the median of ``--repeats``
windows of ``--steps`` steps. Processes run with ``platform.MALLOC_ENV`` unless
``LSTMDROP_NO_MALLOPT=1``. A failed or timed-out measurement is reported, and the exit status
is 1. Needs ``lstmdrop_jax`` importable (installed, or ``PYTHONPATH`` at the checkout).

  python scripts/bench.py --device cpu --configs ptb_cpu --impls ours torch --rounds 5
  python scripts/bench.py --device gpu --dtype bfloat16 --seeds 8 --json bench.json
  python scripts/bench.py variants --configs seed_clf --presets zaremba zoneout --rounds 5
  python scripts/bench.py profile --configs seed_clf zaremba_medium
  python scripts/bench.py cores --epochs 40    # arguments after -- go to overfit.py
"""

from __future__ import annotations

import argparse
import collections
import gzip
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bench_models as models

from lstmdrop_jax import tables
from lstmdrop_jax.platform import MALLOC_ENV, NO_MALLOPT_ENV

MODES = {
  "steps": "Our LSTM's training step against Flax's stock stack and PyTorch.",
  "variants": "Our training step with each dropout preset, against the first.",
  "profile": "Where a JAX training step's time goes: a profiler trace summed by kernel.",
  "cores": "experiments/overfit.py on one CPU device against one device per usable core.",
}
OVERFIT = Path(__file__).resolve().parents[1] / "experiments" / "overfit.py"
#: The presets ``variants`` compares by default: Zaremba's placements, then each plus one variant.
VARIANTS = "zaremba recurrent weight zoneout_h zoneout_c zoneout semeniuta semeniuta_locked rnndrop"
TIMING = ("warmup", "steps", "repeats")
#: Lower bounds of the numeric options.
MINIMA = {
  "rounds": 1,
  "seeds": 1,
  "warmup": 0,
  "steps": 1,
  "repeats": 1,
  "cpu_devices": 1,
  "top": 1,
}
#: The settings of the modes that have no option for them.
FIXED = {
  "rounds": 1, "repeats": 1, "seeds": 1, "shard": None, "cpu_devices": None, "top": None,
  "impls": ["ours"], "dropout": ["zaremba"], "single": None, "json": None,
}  # fmt: skip

# --- parse --------------------------------------------------------------------


def build_parser(mode: str) -> argparse.ArgumentParser:
  """``mode``'s options; ``steps`` also takes a measuring child's hidden ``--single JOB``."""
  p = argparse.ArgumentParser(
    prog=f"bench.py {mode}",
    description=__doc__ if mode == "steps" else MODES[mode],
    epilog=f"modes: steps (the default), {', '.join(list(MODES)[1:])}; `bench.py MODE --help`",
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  add = p.add_argument
  if mode != "profile":
    # Separate processes differ by up to tens of percent on a small CPU: the median is steadier.
    add("--rounds", type=int, default=1, help="measure everything this many times, alternating")
  timeout = None if mode == "cores" else 1200
  timeout_help = f"seconds per measurement; slower ones fail (default: {timeout or 'none'})"
  add("--timeout", type=float, default=timeout, help=timeout_help)
  if mode == "cores":
    add("--epochs", type=int, help="overfit.py's --epochs (default: its own)")
    return p
  add("--device", choices=["cpu", "gpu"], default="cpu")
  default = "by --device" if mode == "steps" else "seed_clf"
  configs = dict(nargs="+", choices=list(models.CONFIGS), metavar="CONFIG")
  add("--configs", **configs, help=f"of %(choices)s (default: {default})")
  add("--dtype", choices=["float32", "bfloat16"], default="float32", help="matmul dtype")
  precision = "float32 matmuls: each framework's default, TF32 everywhere, or full float32"
  add("--precision", choices=["default", "tf32", "highest"], default="default", help=precision)
  add("--unroll", type=int, help="scan unroll of ours and flax (default: each its own)")
  add("--warmup", type=int, default=5, help="steps after the first, before timing")
  if mode == "profile":
    add("--steps", type=int, default=10, help="traced steps of ours")
    add("--top", type=int, default=15, help="kernels listed per configuration")
  else:
    add("--steps", type=int, default=20, help="steps per timed window")
    add("--repeats", type=int, default=5, help="timed windows; their median is reported")
  add("--json", type=Path, metavar="FILE", help="append this invocation's results to FILE")
  add("--tag", help="this invocation's name in --json (default: from the options)")
  if mode == "variants":
    presets = dict(nargs="+", choices=list(models.DROPOUT_PRESETS), metavar="PRESET")
    presets_help = "our dropout presets of %(choices)s, timed against the first"
    add("--presets", dest="dropout", **presets, default=VARIANTS.split(), help=presets_help)
  if mode != "steps":
    return p
  impls = dict(nargs="+", choices=models.IMPLS, default=["ours", "flax", "torch"], metavar="IMPL")
  add("--impls", **impls, help="of %(choices)s (default: ours flax torch)")
  add("--seeds", type=int, default=1, help="K > 1: also time K seeds in one vmapped step (ours)")
  shard = "split ours's batch over all devices (the others run on one)"
  add("--shard", nargs="?", const="ours", choices=["ours"], help=shard)
  add("--cpu-devices", type=int, help="present the CPU as this many JAX devices (see --shard)")
  add("--single", type=json.loads, metavar="JOB", help=argparse.SUPPRESS)  # a measuring child
  return p


def parse_args(argv=None) -> argparse.Namespace:
  """The mode (``args.mode``) and its options, checked, with the defaults that depend on
  others filled in; in ``cores``, ``args.extra`` holds what followed ``--``."""
  argv = list(sys.argv[1:] if argv is None else argv)
  mode = argv.pop(0) if argv and argv[0] in MODES else "steps"
  cut = argv.index("--") if mode == "cores" and "--" in argv else len(argv)
  p = build_parser(mode)
  args = p.parse_args(argv[:cut])
  args.mode, args.extra = mode, argv[cut + 1 :]
  for name, value in FIXED.items():
    vars(args).setdefault(name, value)
  for name, low in MINIMA.items():
    value = getattr(args, name, None)
    if value is not None and value < low:
      p.error(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
  if args.timeout is not None and args.timeout <= 0:
    p.error(f"--timeout must be > 0 seconds, got {args.timeout:g}")
  if mode == "cores":
    return args
  by_mode = models.DEFAULT_CONFIGS[args.device] if mode == "steps" else ["seed_clf"]
  args.configs = args.configs or by_mode
  args.tag = args.tag or default_tag(args)
  return args


def default_tag(args) -> str:
  """``float32 ours+flax`` (or ``float32 variants zaremba+zoneout``, ``float32 profile ours``)
  and the options that set this invocation apart."""
  names = "+".join(args.dropout if args.mode == "variants" else args.impls)
  parts = [args.dtype, *([args.mode] if args.mode != "steps" else []), names]
  parts += [f"unroll {args.unroll}"] if args.unroll else []
  parts += [f"{args.seeds} seeds"] if args.seeds > 1 else []
  parts += [f"precision {args.precision}"] if args.precision != "default" else []
  parts += ["shard ours"] if args.shard else []
  return " ".join(parts)


# --- measure ------------------------------------------------------------------


def per_step(step, sync, steps: int) -> float:
  """Seconds per step of ``steps`` calls of ``step``, synchronised with the device."""
  t0 = time.perf_counter()
  for _ in range(steps):
    step()
  sync()
  return (time.perf_counter() - t0) / steps


#: Host-side wrappers in a CPU trace: they contain the thunks that do the work.
CPU_WRAPPERS = ("ThunkExecutor", "$", "SlinkyThreadPool", "PjitFunction", "while")


def kernel_events(trace: dict) -> tuple[str, list[dict]]:
  """Where the kernels of a perfetto trace ran and their events: the first device's streams,
  or the host's thunks if no device was traced."""
  events = trace["traceEvents"]
  meta = lambda kind: [e for e in events if e.get("ph") == "M" and e.get("name") == kind]
  spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
  devices = [(e["pid"], e["args"]["name"]) for e in meta("process_name")]
  devices = [(pid, name) for pid, name in devices if name.startswith("/device:")]
  if not devices:
    return "host", [e for e in spans if not e["name"].startswith(CPU_WRAPPERS)]
  pid, name = devices[0]
  # A GPU's process also holds summary rows ("XLA Ops", ...): only its streams are kernels.
  threads = {e["tid"]: e["args"]["name"] for e in meta("thread_name") if e.get("pid") == pid}
  streams = {tid for tid, n in threads.items() if n.lower().startswith("stream")}
  if not streams:
    raise ValueError(
      f"no stream rows in the trace of {name} (threads: {sorted(threads.values())}); "
      "this JAX's trace layout is not the one bench.py profile knows"
    )
  return name, [e for e in spans if e["pid"] == pid and e.get("tid") in streams]


def trace_kernels(step, sync, steps: int, top: int) -> dict:
  """Wall and kernel time per step of ``steps`` traced steps, and the ``top`` kernels."""
  import jax

  with tempfile.TemporaryDirectory() as folder:
    with jax.profiler.trace(folder, create_perfetto_trace=True):
      ms = 1e3 * per_step(step, sync, steps)
    path = max(Path(folder).rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    with gzip.open(path) as f:
      where, events = kernel_events(json.load(f))
  total_us, count = collections.Counter(), collections.Counter()
  for e in events:
    total_us[e["name"]] += e["dur"]
    count[e["name"]] += 1
  kernels = [
    {"name": k, "ms": us / steps / 1e3, "per_step": count[k] / steps}
    for k, us in total_us.most_common(top)
  ]
  kernel_ms = sum(total_us.values()) / steps / 1e3
  launches = count.total() / steps
  return {"ms": ms, "where": where, "kernel_ms": kernel_ms, "launches": launches, "top": kernels}


def measure(job: dict) -> dict:
  """One measurement in this process: the ``job`` that ``spawn`` describes."""
  impl, config, dtype, gpu = job["impl"], job["config"], job["dtype"], job["device"] == "gpu"
  models.set_matmul_precision(impl, job["precision"])
  if impl == "torch":
    import torch

    step = models.torch_step(config, dtype, job["device"])
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    peak_mb = lambda: torch.cuda.max_memory_allocated() / 2**20 if gpu else None
    name, devices = torch.cuda.get_device_name() if gpu else "cpu", 1
  else:
    import jax

    sharded = job["shard"]
    s = models.jax_step(config, impl, dtype, job["unroll"], job["seeds"], sharded, job["dropout"])
    state = s.state

    def step():
      nonlocal state
      state, _ = s.step(state, s.batch, s.key)

    sync = lambda: jax.block_until_ready(state)
    dev = jax.devices()[0]
    peak_mb = lambda: (dev.memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**20 or None
    name, devices = dev.device_kind, jax.device_count() if sharded else 1
  for _ in range(1 + job["warmup"]):  # the first call compiles
    step()
  sync()
  if job["top"]:
    result = trace_kernels(step, sync, job["steps"], job["top"])
  else:
    windows = [per_step(step, sync, job["steps"]) for _ in range(job["repeats"])]
    result = {"ms": 1e3 * statistics.median(windows)}
  return {**result, "peak_mb": peak_mb(), "device": name, "devices": devices}


def run_child(cmd: list[str], device: str, timeout: float | None, label: str) -> str | None:
  """The output of ``cmd`` run in a fresh process, or None (reported) if it failed or timed out."""
  env = dict(os.environ)
  if env.get(NO_MALLOPT_ENV) != "1":  # glibc reads these at start, for every framework alike
    env.update(MALLOC_ENV)
  if device == "cpu":
    env["JAX_PLATFORMS"] = "cpu"
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
  except subprocess.TimeoutExpired:
    print(f"  {label}: failed: timed out after {timeout:g} s", file=sys.stderr)
    return None
  if proc.returncode != 0:
    print(f"  {label}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
    return None
  return proc.stdout


def alternate(rounds: int, names: list[str], measure_one: Callable) -> dict[str, dict | None]:
  """``measure_one(name, round)`` for every name in every round, alternating; per name its
  first result with ``ms`` the median of the rounds and ``ms_rounds`` each, or None if a
  round failed."""
  runs = {name: [] for name in names}
  for r in range(rounds):
    for name in names:
      runs[name].append(measure_one(name, r))
  out = {}
  for name, results in runs.items():
    ms = [r["ms"] for r in results] if all(results) else None
    out[name] = dict(results[0], ms=statistics.median(ms), ms_rounds=ms) if ms else None
  return out


def spawn(args, config: str, column: str, seeds: int = 1) -> dict | None:
  """One step measurement in a fresh process: its result, or None if it failed."""
  impl, _, preset = column.rstrip("]").partition("[")
  job = {k: getattr(args, k) for k in ("device", "dtype", "precision", "unroll", "top", *TIMING)}
  # Only the sharded step gets the extra devices: with several devices our model keeps its
  # [T, B] blocks 3-D (fused.project_steps), so an unsharded run there would not be the
  # one-device figure. The vmapped-seeds step is not sharded.
  shard = bool(args.shard) and impl == "ours" and seeds == 1
  job.update(impl=impl, config=config, seeds=seeds, dropout=preset or args.dropout[0], shard=shard)
  job["cpu_devices"] = args.cpu_devices if shard else None
  cmd = [sys.executable, str(Path(__file__).resolve()), "--single", json.dumps(job)]
  label = f"{config}/{column if seeds == 1 else seeds_key(seeds)}"
  out = run_child(cmd, args.device, args.timeout, label)
  lines = [ln for ln in (out or "").splitlines() if ln.startswith("RESULT ")]
  if out is not None and not lines:
    print(f"  {label}: failed: no RESULT line", file=sys.stderr)
  if not lines:
    return None
  r = json.loads(lines[-1].removeprefix("RESULT "))
  print(f"  {label}: {r['ms']:.3f} ms/step on {r['devices']} device(s)", file=sys.stderr)
  return r


seeds_key = "ours x{} seeds".format


def measure_config(args, config: str, impls: list[str]) -> dict:
  """Every column on ``config``: the median of its rounds, None if one failed."""
  c = models.CONFIGS[config]
  row = {"config": config, "gflop_per_step": models.flops_per_step(c) / 1e9}
  row["tokens_per_step"] = c["B"] * c["T"]
  row.update(alternate(args.rounds, impls, lambda impl, _round: spawn(args, config, impl)))
  if args.seeds > 1 and "ours" in impls:
    row[seeds_key(args.seeds)] = spawn(args, config, "ours", args.seeds)
  return row


def run(args) -> dict:
  """This invocation's record: its settings and a row per configuration."""
  impls = list(args.impls)
  if "torch" in impls and importlib.util.find_spec("torch") is None:
    impls.remove("torch")
    print("torch is not importable: skipping the PyTorch baseline", file=sys.stderr)
  impls += [f"ours[{p}]" for p in args.dropout[1:]]  # the variants of ours
  results = [measure_config(args, config, impls) for config in args.configs]
  found = [r[i]["device"] for r in results for i in impls if r.get(i)]
  settings = ("dtype", "precision", "unroll", "seeds", "shard", "cpu_devices", "rounds", "dropout")
  return {
    "tag": args.tag,
    "device": found[0] if found else args.device,
    **{k: getattr(args, k) for k in (*settings, *TIMING)},
    "impls": impls,  # the table's columns; "measured": every key of a row that holds a result
    "measured": impls + ([seeds_key(args.seeds)] if args.seeds > 1 and "ours" in impls else []),
    "results": results,
  }


def run_cores(args) -> tuple[str, list[str]]:
  """The ``cores`` mode: its table, and the layouts whose runs failed."""
  from lstmdrop_jax.parallel import usable_cores

  layouts = {"1 device": ["--cpu-devices", "1"], f"{usable_cores()} devices (default)": []}
  extra = args.extra + (["--epochs", str(args.epochs)] if args.epochs else [])
  with tempfile.TemporaryDirectory(prefix="bench_cores_") as tmp:

    def one_run(name: str, r: int) -> dict | None:
      out = Path(tmp) / f"{r}_{list(layouts).index(name)}"
      cmd = [sys.executable, str(OVERFIT), "--out", str(out), *extra, *layouts[name]]
      t0 = time.perf_counter()
      if run_child(cmd, "cpu", args.timeout, f"overfit.py, {name}") is None:
        return None
      ms = 1e3 * (time.perf_counter() - t0)
      print(f"  round {r + 1}, {name}: {ms / 6e4:.1f} min", file=sys.stderr, flush=True)
      return {"ms": ms, "table": (out / "overfit.csv").read_text()}

    results = alternate(args.rounds, list(layouts), one_run)
  base = next(iter(results.values()))
  rows = [
    [n, f"{m['ms'] / 6e4:.2f}" if m else "failed", ratio(base, m)] for n, m in results.items()
  ]
  same = len({m["table"] for m in results.values() if m}) == 1
  same = "n/a" if not all(results.values()) else "yes" if same else "NO"
  caption = f"python experiments/overfit.py {' '.join(extra)}: median wall time of "
  caption += f"{args.rounds} round(s); tables identical across layouts: {same}"
  failed = [n for n, m in results.items() if not m]
  return tables.markdown(["layout", "minutes", "speed-up"], rows, caption), failed


# --- print --------------------------------------------------------------------


def ms_cell(m: dict | None) -> str:
  return "failed" if m is None else f"{m['ms']:.3f}"


def ratio(m: dict | None, base: dict | None, digits: int = 2) -> str | None:
  """``m``'s time over ``base``'s, or None if either failed."""
  return f"{m['ms'] / base['ms']:.{digits}f}x" if m and base else None


def caption(rec: dict) -> str:
  """What a record's times are: device, settings and timing."""
  timing = f"median of {rec['repeats']}x{rec['steps']} steps"
  timing += f", median of {rec['rounds']} alternating rounds" if rec["rounds"] > 1 else ""
  if rec["shard"] and "ours" in rec["impls"]:
    n = next((r["ours"]["devices"] for r in rec["results"] if r.get("ours")), "all")
    timing += f"; ours: batch split over {n} devices, the others on one"
  setting = f"{rec['dtype']}, unroll {rec['unroll'] or 'default'}, precision {rec['precision']}"
  return f"ms per training step on {rec['device']} ({setting}), {timing}"


def invocation_table(rec: dict) -> str:
  """The ``steps`` table of one invocation: ms per step, throughput, ratios, memory."""
  impls, k, ours = rec["impls"], rec["seeds"], "ours" in rec["impls"]
  baselines = [b for b in impls if b != "ours"] if ours else []
  seeds = k > 1 and ours
  header = ["config", *impls] + ([seeds_key(k), f"{k} seeds vs one"] if seeds else [])
  if ours:
    header += ["tokens/s (ours)", *(f"ours vs {b}" for b in baselines), "peak MB (ours)"]
  rows = []
  for r in rec["results"]:
    row, o = [r["config"], *(ms_cell(r.get(i)) for i in impls)], r.get("ours")
    if seeds:
      x = r.get(seeds_key(k))
      row += [ms_cell(x), f"{k * o['ms'] / x['ms']:.2f}x" if o and x else None]
    if ours:
      row.append(f"{r['tokens_per_step'] / o['ms'] * 1e3:,.0f}" if o else None)
      row += [ratio(r.get(b), o) for b in baselines]
      row.append(f"{o['peak_mb']:.0f}" if o and o["peak_mb"] else None)
    rows.append(row)
  return tables.markdown(header, rows, caption(rec))


def variants_table(rec: dict) -> str:
  """The ``variants`` table: a row per configuration and preset, its time over the first's."""
  header = ["config", "dropout preset", "ms per step", f"vs {rec['dropout'][0]}"]
  rows = [
    [r["config"], preset, ms_cell(r[col]), ratio(r[col], r["ours"], digits=3)]
    for r in rec["results"]
    for preset, col in zip(rec["dropout"], rec["impls"], strict=True)
  ]
  return tables.markdown(header, rows, caption(rec))


def profile_text(rec: dict) -> str:
  """The ``profile`` report: per configuration and implementation, its traced step's times
  and top kernels."""
  lines = []
  for r in rec["results"]:
    for impl in rec["impls"]:
      head, p = f"{r['config']} ({impl}, {rec['dtype']})", r[impl]
      if p is None:
        lines += [f"{head}: failed", ""]
        continue
      times = f"{p['ms']:.3f} ms/step wall, kernels {p['kernel_ms']:.3f} ms/step"
      lines.append(f"{head} on {p['where']}: {times} in {p['launches']:.0f} launches")
      lines += [f"  {k['ms']:8.3f} ms  x{k['per_step']:6.0f}  {k['name'][:110]}" for k in p["top"]]
      lines.append("")
  return "\n".join(lines)


def append_json(path: Path, record: dict) -> None:
  """Adds ``record`` to the list of invocations in ``path`` (created if absent)."""
  records = json.loads(path.read_text()) if path.exists() else []
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps([*records, record], indent=2))


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.single:
    from lstmdrop_jax import parallel

    parallel.use_cpu_devices(args.single["cpu_devices"])  # before JAX starts its backends
    print("RESULT " + json.dumps(measure(args.single)))
    return
  if args.mode == "cores":
    table, failed = run_cores(args)
  else:
    record = run(args)
    report = {"steps": invocation_table, "variants": variants_table, "profile": profile_text}
    table = report[args.mode](record)
    rows = record["results"]
    failed = [f"{r['config']}/{i}" for r in rows for i in record["measured"] if not r[i]]
  print("\n" + table, end="")
  if args.json:
    append_json(args.json, record)
    print(f"appended to {args.json} as {args.tag!r}")
  if failed:
    raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
  main()
