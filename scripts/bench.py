"""Training-step benchmark: our LSTM against Flax's stock stack and PyTorch (cuDNN).

A step is forward + backward + Adam update, dropout 0.5 at the three
placements (input, between the two layers, output). Three implementations
of the same model:

* ``ours``: ``SequenceClassifier`` / ``LanguageModel`` and ``steps.make_train_step``
  (``ours-scan``: the same with ``impl="scan"``, the recurrence differentiated by
  autodiff instead of our backward pass, for comparison);
* ``flax``: ``nn.RNN(nn.OptimizedLSTMCell)`` layers with ``nn.Dropout``;
* ``torch``: ``nn.LSTM(num_layers=2, dropout=0.5)`` (cuDNN on a GPU) with
  ``nn.Dropout`` on the input and output, when torch is importable.

Every (configuration, implementation) runs in its own subprocess, so peak
memory is its own and nothing is shared. Timing: compile and warm up, then
the median over repeats of a window of steps, synchronised with the device.
Ratios compare implementations measured in the same invocation.

  python scripts/bench.py --device cpu --configs seed_clf ptb_small
  python scripts/bench.py --device gpu --dtype bfloat16 --json $OUT/bench.json
  python scripts/bench.py --device gpu --configs seed_clf --seeds 8   # K runs in one vmapped step
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (batch, steps, input features or vocabulary, hidden, layers, head)
CONFIGS = {
  "seed_clf": dict(B=64, T=100, F=20, H=64, L=2, head="binary"),
  "zaremba_medium": dict(B=20, T=35, V=10_000, H=650, L=2, head="lm"),
  "zaremba_large": dict(B=20, T=35, V=10_000, H=1500, L=2, head="lm"),
  "wide_clf": dict(B=256, T=100, F=20, H=512, L=2, head="binary"),
  "ptb_small": dict(B=20, T=20, V=10_000, H=200, L=2, head="lm"),
}
RATE = 0.5


def flops_per_step(c: dict) -> float:
  """Matmul FLOPs of one training step (forward + backward = 3x forward)."""
  B, T, H, L = c["B"], c["T"], c["H"], c["L"]
  fin = c.get("F", H)  # the LM's embedding size is H
  lstm = sum(2 * B * T * ((fin if layer == 0 else H) + H) * 4 * H for layer in range(L))
  head = 2 * B * T * H * c["V"] if c["head"] == "lm" else 2 * B * H
  return 3.0 * (lstm + head)


# --- JAX implementations ------------------------------------------------------


def _jax_setup(name: str, impl: str, dtype: str, unroll, seeds: int, shard: bool = False):
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  from lstmdrop_jax import DropoutConfig, LanguageModel, SequenceClassifier, steps

  c = CONFIGS[name]
  lm = c["head"] == "lm"
  key = jax.random.key(0)
  if lm:
    x = jax.random.randint(key, (c["B"], c["T"]), 0, c["V"])
    batch = {"x": x, "y": jnp.roll(x, -1, axis=1)}
  else:
    x = jax.random.normal(key, (c["B"], c["T"], c["F"]))
    batch = {"x": x, "y": jnp.arange(c["B"]) % 2, "mask": jnp.ones(c["B"], bool)}
  tx = optax.adam(1e-3)
  cdt = jnp.dtype(dtype)

  if impl in ("ours", "ours-scan"):
    drop = DropoutConfig(RATE, RATE, RATE)
    common = dict(hidden=c["H"], layers=c["L"], dropout=drop, unroll=unroll, compute_dtype=cdt)
    common["impl"] = "scan" if impl == "ours-scan" else "fused"
    model = LanguageModel(vocab_size=c["V"], **common) if lm else SequenceClassifier(**common)
    step = steps.make_train_step(model, tx)

    def init(k):
      return steps.create_train_state(model, tx, k, x)

    def run(state, batch, k):
      return step(state, batch, k)

  else:  # Flax's stock recurrent layers

    class Stock(nn.Module):
      @nn.compact
      def __call__(self, x, train):
        if lm:
          x = nn.Embed(c["V"], c["H"])(x)
        x = nn.Dropout(RATE, deterministic=not train)(x)
        for layer in range(c["L"]):
          if layer:
            x = nn.Dropout(RATE, deterministic=not train)(x)
          x = nn.RNN(nn.OptimizedLSTMCell(c["H"], dtype=cdt), unroll=unroll or 1)(x)
        if not lm:
          x = x[:, -1]
        x = nn.Dropout(RATE, deterministic=not train)(x)
        out = nn.Dense(c["V"] if lm else 1, dtype=cdt)(x)
        return out.astype(jnp.float32) if lm else out[:, 0].astype(jnp.float32)

    model = Stock()

    def init(k):
      params = model.init(k, x, False)["params"]
      return {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}

    def run(state, batch, k):
      k = jax.random.fold_in(k, state["step"])

      def loss_fn(p):
        out = model.apply({"params": p}, batch["x"], True, rngs={"dropout": k})
        if lm:
          return optax.softmax_cross_entropy_with_integer_labels(out, batch["y"]).sum() / c["B"]
        return optax.sigmoid_binary_cross_entropy(out, batch["y"].astype(out.dtype)).mean()

      g = jax.grad(loss_fn)(state["params"])
      u, opt = tx.update(g, state["opt"], state["params"])
      return {
        "params": optax.apply_updates(state["params"], u),
        "opt": opt,
        "step": state["step"] + 1,
      }, {}

  if seeds > 1:  # K independent runs in one vmapped step
    keys = jax.random.split(key, seeds)
    state = jax.vmap(init)(keys)
    batch = jax.tree.map(lambda a: jnp.broadcast_to(a, (seeds, *a.shape)), batch)
    step_fn = jax.jit(jax.vmap(run), donate_argnums=0)
    return step_fn, state, batch, keys
  state = init(key)
  if shard:  # data parallel: batch split over every device, state replicated
    from lstmdrop_jax import parallel as par

    mesh = par.make_mesh()
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(par.AXIS))
    state, batch = jax.device_put(state, rep), jax.device_put(batch, rows)
  return jax.jit(run, donate_argnums=0), state, batch, key


def _bench_jax(name, impl, dtype, unroll, seeds, warmup, steps_per_window, repeats, shard=False):
  import jax

  step, state, batch, key = _jax_setup(name, impl, dtype, unroll, seeds, shard)
  t0 = time.perf_counter()
  state, _ = step(state, batch, key)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    state, _ = step(state, batch, key)
  jax.block_until_ready(state)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps_per_window):
      state, _ = step(state, batch, key)
    jax.block_until_ready(state)
    times.append((time.perf_counter() - t0) / steps_per_window)
  dev = jax.devices()[0]
  stats = dev.memory_stats() or {}
  return {
    "ms": 1e3 * statistics.median(times),
    "compile_s": compile_s,
    "peak_mb": stats.get("peak_bytes_in_use", 0) / 2**20 or None,
    "device": dev.device_kind,
  }


# --- PyTorch ------------------------------------------------------------------


def _bench_torch(name, dtype, warmup, steps_per_window, repeats, device):
  import torch
  from torch import nn

  c = CONFIGS[name]
  lm = c["head"] == "lm"
  dev = torch.device("cuda" if device == "gpu" else "cpu")
  torch.manual_seed(0)

  class Model(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Embedding(c["V"], c["H"]) if lm else None
      self.drop_in, self.drop_out = nn.Dropout(RATE), nn.Dropout(RATE)
      fin = c["H"] if lm else c["F"]
      self.lstm = nn.LSTM(fin, c["H"], num_layers=c["L"], dropout=RATE, batch_first=True)
      self.head = nn.Linear(c["H"], c["V"] if lm else 1)

    def forward(self, x):
      if lm:
        x = self.embed(x)
      y, _ = self.lstm(self.drop_in(x))
      if not lm:
        y = y[:, -1]
      return self.head(self.drop_out(y))

  model = Model().to(dev).train()
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  if lm:
    x = torch.randint(0, c["V"], (c["B"], c["T"]), device=dev)
    y = torch.roll(x, -1, 1)
    loss_fn = lambda out: (
      nn.functional.cross_entropy(out.reshape(-1, c["V"]), y.reshape(-1), reduction="sum") / c["B"]
    )
  else:
    x = torch.randn(c["B"], c["T"], c["F"], device=dev)
    y = (torch.arange(c["B"], device=dev) % 2).float()
    loss_fn = lambda out: nn.functional.binary_cross_entropy_with_logits(out[:, 0], y)
  autocast = dtype == "bfloat16" and device == "gpu"
  sync = torch.cuda.synchronize if device == "gpu" else (lambda: None)

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
      loss = loss_fn(model(x))
    loss.backward()
    opt.step()

  for _ in range(max(warmup, 3)):
    step()
  sync()
  if device == "gpu":
    torch.cuda.reset_peak_memory_stats()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps_per_window):
      step()
    sync()
    times.append((time.perf_counter() - t0) / steps_per_window)
  peak = torch.cuda.max_memory_allocated() / 2**20 if device == "gpu" else None
  kind = torch.cuda.get_device_name() if device == "gpu" else "cpu"
  return {"ms": 1e3 * statistics.median(times), "compile_s": 0.0, "peak_mb": peak, "device": kind}


# --- driver -------------------------------------------------------------------


def _set_precision(impl: str, precision: str) -> None:
  """float32 matmul mode. default: each framework's own (on NVIDIA GPUs since
  Ampere: XLA and cuDNN's RNN use TF32 tensor cores, torch's other matmuls full
  float32); tf32: TF32 everywhere; highest: full float32 everywhere."""
  if precision == "default":
    return
  if impl == "torch":
    import torch

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
  else:
    import jax

    jax.config.update(
      "jax_default_matmul_precision", "tensorfloat32" if precision == "tf32" else "highest"
    )


def _single(args) -> None:
  """Runs one (configuration, implementation) and prints one JSON line."""
  _set_precision(args.impl, args.precision)
  if args.impl == "torch":
    out = _bench_torch(
      args.configs[0], args.dtype, args.warmup, args.steps, args.repeats, args.device
    )
  else:
    out = _bench_jax(
      args.configs[0],
      args.impl,
      args.dtype,
      args.unroll,
      args.seeds,
      args.warmup,
      args.steps,
      args.repeats,
      args.impl in args.shard,
    )
  import jax

  out["devices"] = jax.device_count() if args.impl in args.shard else 1
  print("RESULT " + json.dumps(out))


SKIPPED = {"skipped": True}  # not run to the end because the --until budget ran out


def measurement_timeout(args, now: float) -> float | None:
  """Seconds a measurement started at ``now`` may take; None: the budget is spent.

  Without ``--until`` it is ``--timeout``; with it, a measurement may start
  until ``--until`` and run at most ``--grace`` seconds past it.
  """
  if args.until is None:
    return args.timeout
  if now >= args.until:
    return None
  return min(args.timeout, args.until + args.grace - now)


def _spawn(args, name: str, impl: str, seeds: int) -> dict | None:
  """One measurement in a fresh process: its result, None if it failed, or SKIPPED."""
  cmd = [sys.executable, __file__, "--single", "--impl", impl, "--configs", name]
  cmd += ["--device", args.device, "--dtype", args.dtype, "--seeds", str(seeds)]
  cmd += ["--precision", args.precision]
  cmd += ["--warmup", str(args.warmup), "--steps", str(args.steps), "--repeats", str(args.repeats)]
  cmd += ["--unroll", str(args.unroll)] if args.unroll else []
  # Only a sharded implementation gets the extra devices: with several
  # devices our model keeps its [T, B] blocks 3-D (fused.project_steps), so
  # an unsharded run there would not be the one-device figure.
  if impl in args.shard and seeds == 1:  # the vmapped-seeds step is not sharded
    cmd += ["--shard", impl]
    cmd += ["--cpu-devices", str(args.cpu_devices)] if args.cpu_devices is not None else []
  env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
  if args.malloc == "keep":  # every implementation alike; see parallel.keep_freed_host_memory
    env.update(MALLOC_MMAP_THRESHOLD_=str(1 << 30), MALLOC_TRIM_THRESHOLD_=str(1 << 30))
  if args.device == "cpu":
    env["JAX_PLATFORMS"] = "cpu"
  timeout = measurement_timeout(args, time.time())
  if timeout is None:
    print(f"  {name}/{impl}: skipped (--until reached)", file=sys.stderr)
    return SKIPPED
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
  except subprocess.TimeoutExpired:
    if timeout < args.timeout:  # cut short by the budget, not too slow by itself
      print(f"  {name}/{impl}: stopped at the --until budget ({timeout:.0f} s)", file=sys.stderr)
      return SKIPPED
    print(f"  {name}/{impl}: timed out after {timeout:.0f} s", file=sys.stderr)
    return None
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
  if proc.returncode != 0 or not lines:
    print(f"  {name}/{impl}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
    return None
  return json.loads(lines[-1][len("RESULT ") :])


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
  p.add_argument("--configs", nargs="+", default=None, choices=list(CONFIGS))
  p.add_argument(
    "--impls",
    nargs="+",
    default=["ours", "flax", "torch"],
    choices=["ours", "ours-scan", "flax", "torch"],
  )
  p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  p.add_argument(
    "--precision",
    choices=["default", "tf32", "highest"],
    default="default",
    help="float32 matmuls: each framework's default (on recent NVIDIA GPUs XLA and cuDNN's "
    "RNN use TF32, torch's other matmuls full float32), TF32 everywhere, or full float32 "
    "everywhere",
  )
  p.add_argument(
    "--unroll",
    type=int,
    default=None,
    help="scan unroll for ours and flax (default: each its own default; ours 8 on GPU, 1 on CPU)",
  )
  p.add_argument(
    "--seeds", type=int, default=1, help="also time K seeds in one vmapped step (ours)"
  )
  p.add_argument(
    "--shard",
    nargs="*",
    choices=["ours", "flax"],
    default=None,
    help="split the batch over all devices (data parallel) for these JAX implementations "
    "(no names: ours and flax); the others run on one device",
  )
  p.add_argument(
    "--cpu-devices",
    type=int,
    default=None,
    help="CPU: present the CPU as this many JAX devices (parallel.use_cpu_devices), e.g. "
    "one per core; with --shard, each gets its share of the batch",
  )
  p.add_argument(
    "--rounds",
    type=int,
    default=1,
    help="run every implementation this many times, alternating, in fresh processes; "
    "report the median (on a 2-core CPU separate processes differ by 10-20%%)",
  )
  p.add_argument(
    "--malloc",
    choices=["keep", "default"],
    default="keep",
    help="keep: every implementation runs with glibc keeping freed memory (what the training "
    "CLI does, parallel.keep_freed_host_memory); default: glibc's own thresholds",
  )
  p.add_argument("--warmup", type=int, default=5)
  p.add_argument("--steps", type=int, default=20, help="steps per timed window")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--timeout", type=int, default=1200, help="seconds per measurement")
  p.add_argument(
    "--until",
    type=float,
    default=None,
    help="Unix time after which no new measurement starts (those left are reported as "
    "skipped); for a device lease with a fixed budget",
  )
  p.add_argument(
    "--grace",
    type=float,
    default=60,
    help="with --until: a measurement started before it may run this many seconds past it",
  )
  p.add_argument("--json", type=Path, default=None, help="write the results here")
  p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.shard = ["ours", "flax"] if args.shard == [] else list(args.shard or [])
  if args.single:
    from lstmdrop_jax import parallel

    parallel.use_cpu_devices(args.cpu_devices)  # before JAX starts
    return _single(args)
  if args.rounds < 1:
    p.error(f"--rounds must be >= 1, got {args.rounds}")
  if args.grace < 0:
    p.error(f"--grace must be >= 0 seconds, got {args.grace}")
  if args.cpu_devices is not None and args.cpu_devices < 1:
    p.error(f"--cpu-devices must be >= 1, got {args.cpu_devices}")
  if args.configs is None:
    args.configs = (
      ["seed_clf", "ptb_small"]
      if args.device == "cpu"
      else ["seed_clf", "zaremba_medium", "zaremba_large", "wide_clf"]
    )
  impls = list(args.impls)
  if "torch" in impls:
    try:
      import torch  # noqa: F401
    except ImportError:
      impls.remove("torch")
      print("torch is not importable: skipping the PyTorch baseline", file=sys.stderr)

  results = []
  for name in args.configs:
    c = CONFIGS[name]
    row = {
      "config": name,
      "dtype": args.dtype,
      "precision": args.precision,
      "unroll": args.unroll,
      "gflop_per_step": flops_per_step(c) / 1e9,
    }
    runs = {impl: [] for impl in impls}
    n_failed = {impl: 0 for impl in impls}
    row["skipped"] = []
    for _ in range(args.rounds):  # alternating, so drift hits every implementation alike
      for impl in impls:
        r = _spawn(args, name, impl, 1)
        n_failed[impl] += r is None
        if r and r is not SKIPPED:
          runs[impl].append(r)
          print(
            f"  {name:15s} {impl:6s} {r['ms']:9.3f} ms/step on {r['devices']} device(s)"
            f"  (compile {r['compile_s']:.1f} s)",
            file=sys.stderr,
          )
    for impl in impls:  # a failed round fails the implementation; skipped rounds are left out
      rs = runs[impl]
      row[impl] = None
      if rs and not n_failed[impl]:
        row[impl] = dict(rs[0], ms=statistics.median(r["ms"] for r in rs))
        row[impl]["ms_rounds"] = [r["ms"] for r in rs]
      elif not n_failed[impl]:  # every round skipped
        row["skipped"].append(impl)
    if args.seeds > 1 and "ours" in impls:
      k = _spawn(args, name, "ours", args.seeds)
      row[f"ours_x{args.seeds}"] = None if k is SKIPPED else k
      if k is SKIPPED:
        row["skipped"].append(f"ours_x{args.seeds}")
    results.append(row)

  device = next((r[i]["device"] for r in results for i in impls if r.get(i)), args.device)
  timing = f"median of {args.repeats}x{args.steps} steps"
  if args.rounds > 1:
    timing += f", median of {args.rounds} alternating rounds"
  sharded = [i for i in args.shard if i in impls]
  if sharded:
    n = next((r[i]["devices"] for r in results for i in sharded if r.get(i)), "?")
    timing += f"; {'/'.join(sharded)}: batch split over {n} devices, others on one"
  setting = f"{args.dtype}, unroll {args.unroll or 'default'}, malloc {args.malloc}"
  setting += f", matmul precision {args.precision}"
  print(f"\nms per training step on {device} ({setting}), {timing}\n")
  head = (
    "| config | "
    + " | ".join(impls)
    + " | tokens/s (ours) | ours vs flax | ours vs torch | peak MB (ours) |"
  )
  print(head)
  print("|" + " --- |" * (len(impls) + 5))
  for r in results:
    ms = {i: r[i]["ms"] if r.get(i) else None for i in impls}
    tok = CONFIGS[r["config"]]["B"] * CONFIGS[r["config"]]["T"]

    def ratio(base, ms=ms):
      return f"{ms[base] / ms['ours']:.2f}x" if ms.get(base) and ms.get("ours") else "n/a"

    def cell(i, r=r, ms=ms):
      if not ms[i]:
        return "skipped" if i in r["skipped"] else "failed"
      done = len(r[i]["ms_rounds"])
      return f"{ms[i]:.3f}" + (f" ({done}/{args.rounds} rounds)" if done < args.rounds else "")

    cells = [cell(i) for i in impls]
    tps = f"{tok / ms['ours'] * 1e3:,.0f}" if ms.get("ours") else "n/a"
    peak = r["ours"]["peak_mb"] if r.get("ours") and r["ours"]["peak_mb"] else None
    print(
      f"| {r['config']} | "
      + " | ".join(cells)
      + f" | {tps} | {ratio('flax')} | {ratio('torch')} | {f'{peak:.0f}' if peak else 'n/a'} |"
    )
    k = r.get(f"ours_x{args.seeds}")
    if k and ms.get("ours"):
      gain = args.seeds * ms["ours"] / k["ms"]
      print(f"|   {args.seeds} seeds vmapped: {k['ms']:.3f} ms/step = {gain:.2f}x one seed |")
  if args.json:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
      json.dumps(
        {"device": device, "args": {k: str(v) for k, v in vars(args).items()}, "results": results},
        indent=2,
      )
    )
    print(f"\nwrote {args.json}")
  wanted = impls + ([f"ours_x{args.seeds}"] if args.seeds > 1 and "ours" in impls else [])
  skipped = [(r["config"], i) for r in results for i in r["skipped"]]
  failed = [(r["config"], i) for r in results for i in wanted if not r.get(i)]
  failed = [m for m in failed if m not in skipped]
  if failed or skipped:  # incomplete results: a non-zero exit either way
    raise SystemExit(f"failed: {failed}; skipped (--until budget): {skipped}")


if __name__ == "__main__":
  main()
