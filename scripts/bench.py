"""Training-step benchmark: our LSTM against Flax's stock stack and PyTorch (cuDNN).

A step is forward + backward + Adam update with dropout 0.5 at the three
placements; the models are in ``bench_models.py``. Every (configuration,
implementation) runs in its own subprocess, so peak memory is its own and
nothing is shared; each runs with glibc keeping freed memory
(``host_memory.MALLOC_ENV``, as the training CLI does) unless
``LSTMDROP_NO_MALLOPT=1``. Timing: the first step (compilation), warm-up
steps, then the median over ``--repeats`` windows of ``--steps`` steps,
synchronised with the device. Ratios compare implementations measured in the
same invocation. A measurement that fails or times out is reported as failed,
and the exit status is then 1. Needs ``lstmdrop_jax`` importable (installed,
or ``PYTHONPATH`` at the checkout).

  python scripts/bench.py --device cpu --configs seed_clf ptb_small
  python scripts/bench.py --device gpu --dtype bfloat16 --json bench.json --tag bf16
  python scripts/bench.py --device gpu --configs seed_clf --seeds 8   # K runs in one vmapped step
  python scripts/bench.py --show bench.json    # one table of every invocation in the file
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench_models as models

from lstmdrop_jax import tables
from lstmdrop_jax.host_memory import MALLOC_ENV, NO_MALLOPT_ENV

#: Lower bounds of the numeric options.
MINIMA = {"rounds": 1, "seeds": 1, "warmup": 0, "steps": 1, "repeats": 1, "cpu_devices": 1}

# --- parse --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
  """The user's options, and the hidden ``--single``/``--impl`` of a measuring child."""
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  add = p.add_argument
  add("--device", choices=["cpu", "gpu"], default="cpu")
  add("--configs", nargs="+", choices=list(models.CONFIGS), help="default: by --device")
  add("--impls", nargs="+", choices=models.IMPLS, default=["ours", "flax", "torch"])
  add("--dtype", choices=["float32", "bfloat16"], default="float32", help="matmul dtype")
  add(
    "--precision",
    choices=["default", "tf32", "highest"],
    default="default",
    help="float32 matmuls: each framework's default (on recent NVIDIA GPUs XLA and cuDNN's "
    "RNN use TF32, PyTorch's other matmuls full float32), TF32 everywhere, or full float32",
  )
  add("--unroll", type=int, help="scan unroll of ours and flax (default: each its own)")
  presets = list(models.DROPOUT_PRESETS)
  dropout_help = "our model's dropout: the three placements, none, or them plus a variant; "
  dropout_help += "with several, each is measured (columns ours[PRESET]) against the first"
  add("--dropout", nargs="+", choices=presets, default=["zaremba"], help=dropout_help)
  add("--seeds", type=int, default=1, help="K > 1: also time K seeds in one vmapped step (ours)")
  shard_help = "split the batch over all devices (data parallel) for these implementations "
  shard_help += "(no names: ours and flax); the others run on one device"
  add("--shard", nargs="*", choices=["ours", "flax"], help=shard_help)
  add("--cpu-devices", type=int, help="present the CPU as this many JAX devices (see --shard)")
  # Separate processes differ by 10-20% on a small CPU: the median over processes is steadier.
  rounds_help = "measure each this many times, alternating, in fresh processes; report the median"
  add("--rounds", type=int, default=1, help=rounds_help)
  add("--warmup", type=int, default=5, help="steps after the first, before timing")
  add("--steps", type=int, default=20, help="steps per timed window")
  add("--repeats", type=int, default=5, help="timed windows; their median is reported")
  add("--timeout", type=float, default=1200, help="seconds per measurement; slower ones fail")
  add("--json", type=Path, metavar="FILE", help="append this invocation's results to FILE")
  add("--tag", help="this invocation's name in --json and --show (default: from the options)")
  add("--show", type=Path, metavar="FILE", help="print the table of all invocations in FILE")
  add("--single", action="store_true", help=argparse.SUPPRESS)  # one measurement, here
  add("--impl", default="ours", choices=models.IMPLS, help=argparse.SUPPRESS)
  return p


def parse_args(argv=None) -> argparse.Namespace:
  """The options, checked, with ``--configs`` and ``--shard`` filled in."""
  p = build_parser()
  args = p.parse_args(argv)
  for name, low in MINIMA.items():
    value = getattr(args, name)
    if value is not None and value < low:
      p.error(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
  if args.timeout <= 0:
    p.error(f"--timeout must be > 0 seconds, got {args.timeout:g}")
  if args.show and not args.show.is_file():
    p.error(f"--show: no such file: {args.show}")
  args.shard = ["ours", "flax"] if args.shard == [] else list(args.shard or [])
  args.configs = args.configs or models.DEFAULT_CONFIGS[args.device]
  args.tag = args.tag or default_tag(args)
  return args


def default_tag(args) -> str:
  """``float32 ours+flax`` and the options that set this invocation apart."""
  parts = [args.dtype, "+".join(args.impls)]
  parts += [f"unroll {args.unroll}"] if args.unroll else []
  parts += [f"{args.seeds} seeds"] if args.seeds > 1 else []
  parts += [f"precision {args.precision}"] if args.precision != "default" else []
  parts += [f"shard {'+'.join(args.shard)}"] if args.shard else []
  parts += [f"dropout {'+'.join(args.dropout)}"] if args.dropout != ["zaremba"] else []
  return " ".join(parts)


# --- measure ------------------------------------------------------------------


def time_steps(step, sync, warmup: int, steps: int, repeats: int) -> tuple[float, list[float]]:
  """Seconds of the first step (compilation included) and per step of each timed window."""
  t0 = time.perf_counter()
  step()
  sync()
  first_s = time.perf_counter() - t0
  for _ in range(warmup):
    step()
  sync()
  windows = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      step()
    sync()
    windows.append((time.perf_counter() - t0) / steps)
  return first_s, windows


def measure(args) -> dict:
  """One measurement in this process: ``args.impl`` on ``args.configs[0]``."""
  impl, config = args.impl, args.configs[0]
  models.set_matmul_precision(impl, args.precision)
  timing = (args.warmup, args.steps, args.repeats)
  if impl == "torch":
    import torch

    gpu = args.device == "gpu"
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    first_s, windows = time_steps(models.torch_step(config, args.dtype, args.device), sync, *timing)
    peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else None
    name, devices = torch.cuda.get_device_name() if gpu else "cpu", 1
  else:
    import jax

    sharded = impl in args.shard and args.seeds == 1  # the vmapped-seeds step is not sharded
    dropout = args.dropout[0]  # a measuring child gets one preset
    s = models.jax_step(config, impl, args.dtype, args.unroll, args.seeds, sharded, dropout)
    state = s.state

    def step():
      nonlocal state
      state, _ = s.step(state, s.batch, s.key)

    first_s, windows = time_steps(step, lambda: jax.block_until_ready(state), *timing)
    dev = jax.devices()[0]
    peak = (dev.memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**20 or None
    name, devices = dev.device_kind, jax.device_count() if sharded else 1
  ms = 1e3 * statistics.median(windows)
  return {"ms": ms, "compile_s": first_s, "peak_mb": peak, "device": name, "devices": devices}


def columns(impls: list[str], presets: list[str]) -> list[str]:
  """The table's columns: every implementation, and ``ours[PRESET]`` for every preset
  after the first."""
  out = []
  for impl in impls:
    out += [impl] + ([f"ours[{p}]" for p in presets[1:]] if impl == "ours" else [])
  return out


def spawn(args, config: str, column: str, seeds: int = 1) -> dict | None:
  """One measurement in a fresh process: its result, or None if it failed or timed out."""
  impl, _, preset = column.rstrip("]").partition("[")
  preset = preset or args.dropout[0]
  cmd = [sys.executable, str(Path(__file__).resolve()), "--single", "--impl", impl]
  cmd += ["--configs", config, "--device", args.device, "--dtype", args.dtype]
  cmd += ["--precision", args.precision, "--seeds", str(seeds), "--warmup", str(args.warmup)]
  cmd += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
  cmd += ["--unroll", str(args.unroll)] if args.unroll else []
  cmd += ["--dropout", preset]
  # Only a sharded implementation gets the extra devices: with several devices
  # our model keeps its [T, B] blocks 3-D (fused.project_steps), so an unsharded
  # run there would not be the one-device figure.
  if impl in args.shard and seeds == 1:
    cmd += ["--shard", impl]
    cmd += ["--cpu-devices", str(args.cpu_devices)] if args.cpu_devices else []
  env = dict(os.environ)
  if env.get(NO_MALLOPT_ENV) != "1":  # glibc reads these at start, for every framework alike
    env.update(MALLOC_ENV)
  if args.device == "cpu":
    env["JAX_PLATFORMS"] = "cpu"
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
  except subprocess.TimeoutExpired:
    print(f"  {config}/{column}: failed: timed out after {args.timeout:g} s", file=sys.stderr)
    return None
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
  if proc.returncode != 0 or not lines:
    print(f"  {config}/{column}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
    return None
  return json.loads(lines[-1].removeprefix("RESULT "))


def seeds_key(seeds: int) -> str:
  return f"ours x{seeds} seeds"


def measure_config(args, config: str, impls: list[str]) -> dict:
  """Every implementation on ``config``: the median of its rounds, None if one failed."""
  c = models.CONFIGS[config]
  row = {"config": config, "gflop_per_step": models.flops_per_step(c) / 1e9}
  row["tokens_per_step"] = c["B"] * c["T"]
  runs = {impl: [] for impl in impls}
  for _ in range(args.rounds):  # alternating, so drift hits every implementation alike
    for impl in impls:
      r = spawn(args, config, impl)
      runs[impl].append(r)
      if r:
        msg = f"  {config:15s} {impl:9s} {r['ms']:9.3f} ms/step on {r['devices']} device(s)"
        print(f"{msg}  (first step {r['compile_s']:.1f} s)", file=sys.stderr)
  for impl, rs in runs.items():
    ms = [r["ms"] for r in rs if r]
    row[impl] = dict(rs[0], ms=statistics.median(ms), ms_rounds=ms) if all(rs) else None
  if args.seeds > 1 and "ours" in impls:
    row[seeds_key(args.seeds)] = spawn(args, config, "ours", args.seeds)
  return row


def run(args) -> dict:
  """This invocation's record: its settings and a row per configuration."""
  impls = list(args.impls)
  if "torch" in impls and importlib.util.find_spec("torch") is None:
    impls.remove("torch")
    print("torch is not importable: skipping the PyTorch baseline", file=sys.stderr)
  impls = columns(impls, args.dropout)
  results = [measure_config(args, config, impls) for config in args.configs]
  found = [r[i]["device"] for r in results for i in impls if r.get(i)]
  settings = ("dtype", "precision", "unroll", "seeds", "shard", "cpu_devices", "rounds", "dropout")
  return {
    "tag": args.tag,
    "device": found[0] if found else args.device,
    **{k: getattr(args, k) for k in (*settings, "warmup", "steps", "repeats")},
    "impls": impls,  # the table's columns; "measured": every key of a row that holds a result
    "measured": impls + ([seeds_key(args.seeds)] if args.seeds > 1 and "ours" in impls else []),
    "results": results,
  }


# --- print --------------------------------------------------------------------


def ms_cell(m: dict | None) -> str:
  return "failed" if m is None else f"{m['ms']:.3f}"


def invocation_table(rec: dict) -> str:
  """The Markdown table of one invocation: ms per step, throughput, ratios, memory."""
  impls, k = rec["impls"], rec["seeds"]
  variants = [i for i in impls if i.startswith("ours[")]
  baselines = [b for b in impls if b != "ours" and b not in variants] if "ours" in impls else []
  seeds = k > 1 and "ours" in impls
  header = ["config", *impls] + ([seeds_key(k), f"{k} seeds vs one"] if seeds else [])
  if "ours" in impls:
    header += ["tokens/s (ours)", *(f"ours vs {b}" for b in baselines), "peak MB (ours)"]
    header += [f"{v} / ours" for v in variants]
  rows = []
  for r in rec["results"]:
    row = [r["config"], *(ms_cell(r.get(i)) for i in impls)]
    o = r.get("ours")
    if seeds:
      x = r.get(seeds_key(k))
      row += [ms_cell(x), f"{k * o['ms'] / x['ms']:.2f}x" if o and x else None]
    if "ours" in impls:
      row.append(f"{r['tokens_per_step'] / o['ms'] * 1e3:,.0f}" if o else None)
      row += [f"{r[b]['ms'] / o['ms']:.2f}x" if o and r.get(b) else None for b in baselines]
      row.append(f"{o['peak_mb']:.0f}" if o and o["peak_mb"] else None)
      row += [f"{r[v]['ms'] / o['ms']:.2f}x" if o and r.get(v) else None for v in variants]
    rows.append(row)
  timing = f"median of {rec['repeats']}x{rec['steps']} steps"
  timing += f", median of {rec['rounds']} alternating rounds" if rec["rounds"] > 1 else ""
  if sharded := [i for i in rec["shard"] if i in impls]:
    n = next((r[i]["devices"] for r in rec["results"] for i in sharded if r.get(i)), "all")
    timing += f"; {'/'.join(sharded)}: batch split over {n} devices, the others on one"
  setting = f"{rec['dtype']}, unroll {rec['unroll'] or 'default'}, precision {rec['precision']}"
  caption = f"ms per training step on {rec['device']} ({setting}), {timing}"
  return tables.markdown(header, rows, caption)


def summary_table(records: list[dict]) -> str:
  """One row per measurement of every invocation in a ``--json`` file."""
  header = ["run", "device", "config", "dtype", "precision", "unroll", "impl", "ms/step"]
  rows = []
  for rec in records:
    setting = [rec["dtype"], rec["precision"], rec["unroll"] or "default"]
    for r in rec["results"]:
      rows += [
        [rec["tag"], rec["device"], r["config"], *setting, i, ms_cell(r[i])]
        for i in rec["measured"]
      ]
  return tables.markdown(header, rows)


def append_json(path: Path, record: dict) -> None:
  """Adds ``record`` to the list of invocations in ``path`` (created if absent)."""
  records = json.loads(path.read_text()) if path.exists() else []
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps([*records, record], indent=2))


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.show:
    print(summary_table(json.loads(args.show.read_text())), end="")
    return
  if args.single:
    from lstmdrop_jax import parallel

    parallel.use_cpu_devices(args.cpu_devices)  # before JAX starts its backends
    print("RESULT " + json.dumps(measure(args)))
    return
  record = run(args)
  print("\n" + invocation_table(record), end="")
  if args.json:
    append_json(args.json, record)
    print(f"appended to {args.json} as {args.tag!r}")
  failed = [f"{r['config']}/{i}" for r in record["results"] for i in record["measured"] if not r[i]]
  if failed:
    raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
  main()
