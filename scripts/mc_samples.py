"""A language model's Monte-Carlo dropout perplexity against the number of passes.

For a trained run folder, scores the start of the test split once with the standard dropout
approximation (dropout off) and then with Monte-Carlo dropout at each ``--samples`` count
(``tasks.language_model.mc_test_nll``: every word's probability averaged over the passes).
Also prints the mean perplexity of the single passes. Whether the Monte-Carlo estimate has
converged, and to what, is read from the rows: the estimate of ``log`` mean probability is
biased upwards for few passes and settles as the count grows. ``--off`` keeps placements
off during the passes (the model is the one trained with them), to see which placement's
noise the estimate pays for.

  python scripts/mc_samples.py RUN_FOLDER --tokens 10000 --samples 1 10 100 400
  python scripts/mc_samples.py RUN_FOLDER --tokens 3000 --samples 50 --off embedding
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from lstmdrop_jax import data as data_lib
from lstmdrop_jax import predict, steps
from lstmdrop_jax.data import text
from lstmdrop_jax.placements import RATE_FIELDS
from lstmdrop_jax.tasks.language_model import mc_test_nll


def standard_nll(run: predict.LoadedRun, state: steps.TrainState, stream: dict) -> float:
  """The summed ``-log p`` of ``stream``'s words with dropout off, the state carried (the
  library's evaluation of a split)."""
  evaluate = jax.jit(steps.make_evaluate(run.model, steps.LANGUAGE_MODEL))
  return float(evaluate(state, {n: jnp.asarray(a) for n, a in stream.items()})["loss_sum"])


def main(argv: list[str] | None = None) -> dict:
  """Prints the table; returns its perplexities: ``standard``, and per count of passes
  ``(mc, mean single-pass)``."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("run", help="a language model's run folder")
  parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
  parser.add_argument("--tokens", type=int, default=None, help="the test split's first N words")
  parser.add_argument("--samples", type=int, nargs="+", default=[1, 10, 100])
  parser.add_argument("--seed", type=int, default=0, help="the passes' key")
  parser.add_argument(
    "--off",
    nargs="*",
    default=[],
    choices=RATE_FIELDS,
    metavar="PLACEMENT",
    help=f"placements kept off in the passes: any of {', '.join(RATE_FIELDS)}",
  )
  args = parser.parse_args(argv)
  if any(s < 1 for s in args.samples):
    raise SystemExit(f"error: --samples {args.samples}: every count must be >= 1")
  try:
    run = predict.load_run(args.run, args.checkpoint)
  except (FileNotFoundError, predict.RunFolderError) as e:
    raise SystemExit(f"error: {e}") from None
  c = run.config
  if c.dataset not in data_lib.TEXT_DATASETS:
    raise SystemExit(f"error: {args.run} is a {c.dataset} run; this script scores language models")
  tokens = data_lib.load_text(c.dataset, c.data_dir).test[: args.tokens]
  stream = text.eval_stream(tokens, c.num_steps, 1)
  state = steps.TrainState(
    step=jnp.int32(0), params=run.variables["params"], opt_state=None,
    dropout=c.dropout.replace(**dict.fromkeys(args.off, 0.0)), carry=None,
  )  # fmt: skip
  count = float(np.sum(stream["mask"]))
  off = f"; off in the passes: {', '.join(args.off)}" if args.off else ""
  print(
    f"{args.run}: {args.checkpoint} checkpoint (epoch {run.epoch}), {int(count)} test words" + off
  )
  print("| passes | MC test ppl | mean single-pass ppl | seconds |")
  print("| --- | --- | --- | --- |")
  standard = math.exp(standard_nll(run, state, stream) / count)
  print(f"| standard (dropout off) | {standard:.2f} | | |")
  table: dict = {"standard": standard}
  for samples in args.samples:
    t0 = time.perf_counter()
    m = mc_test_nll(run.model, state, stream, jax.random.key(args.seed), samples)
    single = float(np.mean(np.exp(m["pass_nll"] / count)))
    table[samples] = (math.exp(m["nll"] / count), single)
    print(f"| {samples} | {math.exp(m['nll'] / count):.2f} | {single:.2f} | "
          f"{time.perf_counter() - t0:.0f} |", flush=True)  # fmt: skip
  return table


if __name__ == "__main__":
  main(sys.argv[1:])
