"""Where a tied softmax layer's time goes on a CPU: ours against PyTorch's.

The layer is ``ptb_cpu``'s (``bench_models.CONFIGS``): a ``[B*T, H]`` block of LSTM outputs,
the ``[V, H]`` embedding matrix as the softmax kernel, a bias, and the summed cross-entropy
of the next tokens. Each candidate runs its forward and backward pass (gradients of the
outputs, the matrix and the bias) in fresh processes of one invocation, alternating over
``--rounds``, timed as ``bench.py`` times a step:

* ``ours``: the library's path, ``flax.linen.Embed.attend`` plus the bias, scored by
  ``steps.lm_metrics`` (optax's cross-entropy), differentiated by JAX;
* ``ours-saved``: the same forward, with a ``jax.custom_vjp`` that keeps the softmax from the
  forward pass for the backward one instead of recomputing its exponentials;
* ``ours-products`` and ``torch-products``: the layer's three matrix products alone (logits,
  and the gradients of the outputs and of the matrix), every result written out;
* ``torch``: ``F.cross_entropy(h @ E.T + b, y, reduction="sum")`` and its backward pass.

Every time is printed against ``torch``'s, measured in the same rounds. ``--out`` writes
``softmax_cpu.md`` and ``softmax_cpu.json`` there.

  python scripts/softmax_bench.py --rounds 5 --out results/softmax_cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import bench
import bench_models as models

from lstmdrop_jax import tables

IMPLS = ("ours", "ours-saved", "ours-products", "torch", "torch-products")
BASELINE = "torch"


def shapes(config: str) -> tuple[int, int, int]:
  """Rows (``B*T``), units and vocabulary of ``config``'s softmax layer."""
  c = models.CONFIGS[config]
  if c["head"] != "lm":
    raise ValueError(f"--config {config} has no softmax over a vocabulary; use an lm config")
  return c["B"] * c["T"], c["H"], c["V"]


def jax_layer(impl: str, n: int, h: int, v: int):
  """A no-argument forward and backward pass of ``impl``, and its synchronisation."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from lstmdrop_jax import steps

  keys = jax.random.split(jax.random.key(0), 4)
  y_NH = jax.random.normal(keys[0], (n, h)) * 0.5
  embed = nn.Embed(v, h)
  variables = embed.init(keys[1], jnp.zeros((1,), jnp.int32))
  params = (y_NH, variables["params"]["embedding"], jnp.zeros((v,)))
  labels = jax.random.randint(keys[2], (n,), 0, v)
  if impl == "ours-products":
    params = (*params, jax.random.normal(keys[3], (n, v)))
    fn = jax.jit(lambda y, e, b, g: (y @ e.T, g @ e, g.T @ y))
  else:

    def loss(y, e, b):
      logits = embed.apply({"params": {"embedding": e}}, y, method="attend") + b
      if impl == "ours":
        return steps.lm_metrics(logits, labels)["loss_sum"]
      return saved_softmax_nll(logits, labels)

    fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  out = None

  def step():
    nonlocal out
    out = fn(*params)

  return step, lambda: jax.block_until_ready(out)


def saved_softmax_nll(logits_NV, labels_N):
  """The summed cross-entropy whose backward pass reuses the forward pass's softmax."""
  import jax
  import jax.numpy as jnp

  @jax.custom_vjp
  def nll(logits):
    return fwd(logits)[0]

  def fwd(logits):
    m = jnp.max(logits, -1, keepdims=True)
    e = jnp.exp(logits - m)
    s = jnp.sum(e, -1, keepdims=True)
    picked = jnp.take_along_axis(logits, labels_N[:, None], -1)
    return jnp.sum(m + jnp.log(s) - picked), e / s

  def bwd(p, g):
    return (g * (p - jax.nn.one_hot(labels_N, p.shape[-1], dtype=p.dtype)),)

  nll.defvjp(fwd, bwd)
  return nll(logits_NV)


def torch_layer(impl: str, n: int, h: int, v: int):
  """The PyTorch counterpart of ``jax_layer``."""
  import torch

  gen = torch.Generator().manual_seed(0)
  y_NH = (torch.randn(n, h, generator=gen) * 0.5).requires_grad_()
  e_VH = (torch.rand(v, h, generator=gen) * 0.1 - 0.05).requires_grad_()
  b_V = torch.zeros(v, requires_grad=True)
  labels = torch.randint(0, v, (n,), generator=gen)
  g_NV = torch.randn(n, v, generator=gen)

  def step():
    if impl == "torch-products":
      with torch.no_grad():
        return y_NH @ e_VH.T, g_NV @ e_VH, g_NV.T @ y_NH
    for p in (y_NH, e_VH, b_V):
      p.grad = None
    torch.nn.functional.cross_entropy(y_NH @ e_VH.T + b_V, labels, reduction="sum").backward()

  return step, lambda: None


def measure(job: dict) -> dict:
  """One candidate in this process: ms per pass, the median of ``repeats`` windows."""
  make = torch_layer if job["impl"].startswith("torch") else jax_layer
  step, sync = make(job["impl"], *job["shape"])
  for _ in range(1 + job["warmup"]):  # the first call compiles
    step()
  sync()
  windows = [bench.per_step(step, sync, job["steps"]) for _ in range(job["repeats"])]
  return {"ms": 1e3 * statistics.median(windows)}


def spawn(args, impl: str) -> dict | None:
  """One candidate measured in a fresh process, or None (reported) if it failed."""
  job = {"impl": impl, "shape": shapes(args.config), **{k: getattr(args, k) for k in bench.TIMING}}
  cmd = [sys.executable, str(Path(__file__).resolve()), "--single", json.dumps(job)]
  out = bench.run_child(cmd, "cpu", args.timeout, impl)
  lines = [ln for ln in (out or "").splitlines() if ln.startswith("RESULT ")]
  if not lines:
    if out is not None:
      print(f"  {impl}: failed: no RESULT line", file=sys.stderr)
    return None
  r = json.loads(lines[-1].removeprefix("RESULT "))
  print(f"  {impl}: {r['ms']:.2f} ms", file=sys.stderr)
  return r


def table(args, results: dict) -> tuple[list[str], list[list]]:
  """A row per candidate: median ms, its rounds' range, and its time over ``BASELINE``'s."""
  base = results.get(BASELINE)
  rows = []
  for impl in args.impls:
    m = results[impl]
    spread = f"{min(m['ms_rounds']):.1f}-{max(m['ms_rounds']):.1f}" if m else None
    rows.append([impl, bench.ms_cell(m), spread, bench.ratio(m, base)])
  return ["layer", "ms (median)", "rounds", f"time / {BASELINE}'s"], rows


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default="ptb_cpu", help="a bench_models config with a vocabulary")
  p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
  p.add_argument("--rounds", type=int, default=3, help="alternating rounds (fresh processes)")
  p.add_argument("--warmup", type=int, default=2, help="passes after the compiling one")
  p.add_argument("--steps", type=int, default=5, help="passes per timed window")
  p.add_argument("--repeats", type=int, default=5, help="timed windows; their median is kept")
  p.add_argument("--timeout", type=float, default=600.0, help="seconds per process")
  p.add_argument("--out", type=Path, help="folder for softmax_cpu.md and softmax_cpu.json")
  p.add_argument("--single", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  for name in ("rounds", "steps", "repeats"):
    if getattr(args, name) < 1:
      p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  if args.warmup < 0:
    p.error(f"--warmup must be >= 0, got {args.warmup}")
  if BASELINE not in args.impls:
    p.error(f"--impls must include {BASELINE}, the baseline every ratio is against")
  if args.config not in models.CONFIGS:
    p.error(f"--config {args.config!r} is not one of {', '.join(models.CONFIGS)}")
  try:
    shapes(args.config)
  except ValueError as e:
    p.error(str(e))
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.single:
    print("RESULT " + json.dumps(measure(json.loads(args.single))))
    return
  n, h, v = shapes(args.config)
  print(f"{args.config}'s softmax layer: [{n}, {h}] x [{h}, {v}]", file=sys.stderr)
  results = bench.alternate(args.rounds, list(args.impls), lambda impl, _: spawn(args, impl))
  header, rows = table(args, results)
  caption = (
    f"ms per forward and backward pass of {args.config}'s tied softmax layer ([{n}, {h}] x "
    f"[{h}, {v}]) on the CPU, median of {args.repeats}x{args.steps} passes, median of "
    f"{args.rounds} alternating rounds"
  )
  text = tables.markdown(header, rows, caption)
  print(text)
  if args.out:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "softmax_cpu.md").write_text(text)
    settings = {k: x for k, x in vars(args).items() if k not in ("out", "single")}
    record = {"shape": [n, h, v], **settings, "results": results}
    (args.out / "softmax_cpu.json").write_text(json.dumps(record, indent=2) + "\n")
  if any(m is None for m in results.values()):
    sys.exit(1)


if __name__ == "__main__":
  main()
