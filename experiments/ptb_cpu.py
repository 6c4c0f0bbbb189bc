"""A dropout language model on a CPU: PyTorch's word-language-model recipe on PTB.

PyTorch's example (pytorch/examples, ``word_language_model``) trains a
2-layer, 200-unit LSTM with tied embedding and softmax weights, dropout 0.2
on the embeddings, between the layers and on the output (a fresh mask at
every step: ``DropoutConfig(0.2, 0.2, 0.2)``), SGD at learning rate 20
divided by 4 whenever validation does not improve, gradient clip 0.25, BPTT
35, batch 20, 40 epochs. Its README gave PTB test perplexity 87.17 (later versions
give the same figures for WikiText-2).

This study trains that recipe (``example``) and two better-placed recipes
of the same size, optimiser and epoch budget:

* ``gal``: Gal & Ghahramani's variational LSTM: time-locked masks on the
  input, between the layers and on the output, a time-locked mask on
  ``h_{t-1}`` (``recurrent``) and whole-word embedding dropout;
* ``awd``: AWD-LSTM's regularisers (Merity et al., 2018) without its
  optimiser: DropConnect on ``W_hh`` (``weight``), time-locked masks at the
  three placements, whole-word embedding dropout.

Rates are chosen on validation only. Phase ``grid`` trains every candidate
of ``CANDIDATES`` (and the example, as the reference) for ``grid_epochs``
epochs, seed 0, as one group; each recipe takes its candidate with the
lowest best validation perplexity. Short runs favour weaker dropout (it
fits faster), so the grid's choice leans low. Phase ``full`` trains the
example (seeds 0 and 1) and each recipe's choice (seed 0) for 40 epochs as
one group; phase ``seeds`` trains seed 1 of the better recipe: the one whose
seed-0 run has the lower best validation perplexity in phase ``full``.

The recipe in our terms. Our language-model loss is Zaremba et al.'s, the
sum over the 35 unrolled steps of the batch-mean NLL: 35 times the
per-token mean of PyTorch's example. So its learning rate 20 is ours
20/35 and its clip 0.25 is ours 0.25 * 35 (the same update, exactly).
Every parameter starts from U(-0.1, 0.1) (the example: the embedding and
softmax so, the LSTM from PyTorch's U(-1/sqrt(200), 1/sqrt(200)), no
forget-gate bias either way); the tied softmax's bias starts at zero.
Validation runs in 20 streams and test in one (the example: 10 each), the
state carried through. Test is scored after the last epoch (the example
scores its best-validation model; the ``best val`` column says where the
two differ).

Commands::

  python experiments/ptb_cpu.py                  # every phase, resumable (hours on 2 cores)
  python experiments/ptb_cpu.py --phase grid     # one phase
  python experiments/ptb_cpu.py --quick          # the pipeline on a 2x32 model (a minute)

Outputs go to ``results/ptb_cpu/``: ``runs/<phase>/<name>_s<seed>/`` run
folders (re-running resumes them), ``ptb_cpu_grid.{md,csv}`` and
``ptb_cpu.{md,csv}``. Results: docs/ptb.md.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from lstmdrop_jax import tables
from lstmdrop_jax.dropout import DropoutConfig
from lstmdrop_jax.parallel import setup_cpu_devices
from lstmdrop_jax.platform import keep_freed_host_memory
from lstmdrop_jax.run_folder import read_config, read_jsonl, read_summary
from lstmdrop_jax.train import Config, train_runs

#: BPTT steps: our loss is this many times the example's per-token mean.
UNROLL = 35
EXAMPLE = DropoutConfig(input=0.2, between=0.2, output=0.2)


def _gal(p: float, recurrent: float, embedding: float) -> DropoutConfig:
  return DropoutConfig(input=p, between=p, output=p, recurrent=recurrent, embedding=embedding,
                       time_locked=True)  # fmt: skip


def _awd(p: float, weight: float, embedding: float) -> DropoutConfig:
  return DropoutConfig(input=p, between=p, output=p, weight=weight, embedding=embedding,
                       time_locked=True)  # fmt: skip


#: The rates each recipe chooses from (on validation, phase ``grid``).
CANDIDATES: dict[str, dict[str, DropoutConfig]] = {
  "gal": {
    "gal_a": _gal(0.2, 0.1, 0.1),
    "gal_b": _gal(0.3, 0.2, 0.1),
    "gal_c": _gal(0.4, 0.2, 0.1),
  },
  "awd": {
    "awd_a": _awd(0.2, 0.2, 0.1),
    "awd_b": _awd(0.3, 0.3, 0.1),
    "awd_c": _awd(0.4, 0.4, 0.1),
    "awd_d": _awd(0.3, 0.5, 0.1),
  },
}
RECIPES = ("example", *CANDIDATES)


def recipe(data_dir: str, dropout: DropoutConfig = EXAMPLE, seed: int = 0) -> Config:
  """The example's model and optimiser with ``dropout``."""
  return Config(
    dataset="ptb",
    data_dir=data_dir,
    hidden=200,
    layers=2,
    tie_weights=True,
    init_scale=0.1,
    forget_bias=0.0,
    num_steps=UNROLL,
    batch_size=20,
    optimizer="sgd",
    learning_rate=20.0 / UNROLL,
    clip_norm=0.25 * UNROLL,
    schedule="plateau",
    lr_decay=4.0,
    epochs=40,
    dropout=dropout,
    seed=seed,
    checkpoint_every=1,
    keep_checkpoints=1,
  )


def quick(config: Config) -> Config:
  """The pipeline on a 2x32 model: 10 steps an epoch, scored on 4,000 tokens."""
  tokens = config.batch_size * config.num_steps * 10 + config.batch_size
  return dataclasses.replace(config, hidden=32, train_tokens=tokens, eval_tokens=4000)


def grid_jobs(data_dir: str, epochs: int) -> dict[str, Config]:
  """The example and every candidate, seed 0, ``epochs`` epochs."""
  drops = {"example": EXAMPLE, **{n: d for c in CANDIDATES.values() for n, d in c.items()}}
  return {n: dataclasses.replace(recipe(data_dir, d), epochs=epochs) for n, d in drops.items()}


def best_val(run: Path, phase: str) -> float:
  """The best validation perplexity of the finished run in folder ``run``.

  Raises:
    ValueError: it has not finished (the message says to run ``phase`` first).
  """
  summary = read_summary(run)
  if summary is None or summary["best"] is None:
    raise ValueError(f"the {phase} run {run.name} has not finished; run --phase {phase} first")
  return summary["best"]["val/ppl"]


def choose(grid_dir: Path) -> dict[str, str]:
  """Each recipe's candidate with the lowest best validation perplexity in the grid.

  Raises:
    ValueError: a candidate's grid run has not finished.
  """
  chosen = {}
  for name, candidates in CANDIDATES.items():
    chosen[name] = min(candidates, key=lambda c: best_val(grid_dir / f"{c}_s0", "grid"))
  return chosen


def full_jobs(data_dir: str, chosen: dict[str, str]) -> dict[str, Config]:
  """The example (seeds 0 and 1) and each recipe's choice (seed 0), 40 epochs."""
  jobs = {f"example_s{s}": recipe(data_dir, EXAMPLE, s) for s in (0, 1)}
  for name, cand in chosen.items():
    jobs[f"{name}_s0"] = recipe(data_dir, CANDIDATES[name][cand], 0)
  return jobs


def better(full_dir: Path) -> str:
  """The recipe whose seed-0 run of phase ``full`` has the lowest best validation perplexity.

  Raises:
    ValueError: a recipe's run of phase ``full`` has not finished.
  """
  return min(CANDIDATES, key=lambda n: best_val(full_dir / f"{n}_s0", "full"))


def seed_jobs(data_dir: str, chosen: dict[str, str], full_dir: Path) -> dict[str, Config]:
  """Seed 1 of the better recipe's choice (``better``)."""
  name = better(full_dir)
  return {f"{name}_s1": recipe(data_dir, CANDIDATES[name][chosen[name]], 1)}


def label(d: DropoutConfig) -> str:
  """The rates that are on, ``locked`` when the masks are time-locked."""
  rates = ", ".join(f"{p} {getattr(d, p):g}" for p in d.active())
  return rates + (" (locked)" if d.time_locked else "")


def _ppl(record: dict | None, key: str) -> float | None:
  return None if record is None or key not in record else round(record[key], 1)


def row(name: str, workdir: Path, config: Config) -> dict:
  """One run's table row from its folder."""
  summary = read_summary(workdir)
  log = read_jsonl(workdir / "metrics.jsonl")
  train = [r for r in log if "train_ppl" in r]
  best = summary["best"]
  return {
    "run": name,
    "dropout": label(config.dropout),
    "train ppl": round(train[-1]["train_ppl"], 1) if train else None,
    "best val ppl": _ppl(best, "val/ppl"),
    "best epoch": best["epoch"] if best else None,
    "final val ppl": _ppl(summary["final"], "val/ppl"),
    "test ppl": _ppl(summary["final"], "test/ppl"),
    "epochs": summary["epochs"],
    "final lr": round(train[-1]["lr"] * UNROLL, 6) if train else None,
    "group wall time (min)": round(summary["wall_time_s"] / 60, 1),
  }


def run_phase(jobs: dict[str, Config], out: Path, phase: str, quick_run: bool) -> None:
  """Trains ``jobs`` as one group into ``out/runs/<phase>/<name>``."""
  if quick_run:
    jobs = {n: quick(c) for n, c in jobs.items()}
  for c in jobs.values():
    c.validate()
  print(f"{phase}: {len(jobs)} runs ({', '.join(jobs)})", file=sys.stderr)
  train_runs(list(jobs.values()), [out / "runs" / phase / n for n in jobs])


def table(out: Path, phases: tuple[str, ...], stem: str) -> Path | None:
  """The table of every finished run of ``phases`` (None if there is none)."""
  rows = []
  for phase in phases:
    for folder in sorted((out / "runs" / phase).glob("*")):
      config = read_config(folder)
      if config is not None and read_summary(folder) is not None:
        rows.append(row(folder.name, folder, Config.from_dict(config)))
  if not rows:
    return None
  rows.sort(key=lambda r: (RECIPES.index(r["run"].split("_")[0]), r["run"]))
  header = list(rows[0])
  cells = [[r[c] for c in header] for r in rows]
  return tables.write_tables(out, stem, header, cells, formats=("md", "csv"))["md"]


@dataclasses.dataclass(frozen=True)
class Args:
  """PyTorch's word-language-model recipe on PTB, and better-placed dropout, on a CPU."""

  phase: str = "all"
  """grid, full, seeds, or all (each in turn; finished runs are read back)."""
  data_dir: str = "../shared/data/ptb"
  """Folder with ptb.{train,valid,test}.txt."""
  out: Path | None = None
  """Output folder (default results/ptb_cpu, or results/ptb_cpu/quick with --quick)."""
  grid_epochs: int = 6
  """Epochs of each grid run."""
  quick: bool = False
  """A 2x32 model, 10 steps an epoch, 2 epochs (1 in the grid): checks the pipeline."""
  cpu_devices: int | None = None
  """CPU: present the CPU as this many JAX devices (default: one per usable core)."""


def run_study(args: Args) -> list[Path]:
  """Runs the phases ``args`` asks for; returns the tables written."""
  if args.phase not in ("grid", "full", "seeds", "all"):
    raise ValueError(f"--phase must be grid, full, seeds or all, got {args.phase!r}")
  if args.grid_epochs < 1:
    raise ValueError(f"--grid-epochs must be >= 1, got {args.grid_epochs}")
  out = args.out or Path("results/ptb_cpu") / ("quick" if args.quick else "")
  if args.phase in ("grid", "all"):
    jobs = grid_jobs(args.data_dir, 1 if args.quick else args.grid_epochs)
    run_phase({f"{n}_s0": c for n, c in jobs.items()}, out, "grid", args.quick)
  if args.phase != "grid":
    chosen = choose(out / "runs" / "grid")
    for phase in ("full", "seeds"):
      if args.phase in (phase, "all"):
        todo = (
          full_jobs(args.data_dir, chosen)
          if phase == "full"
          else seed_jobs(args.data_dir, chosen, out / "runs" / "full")
        )
        if args.quick:
          todo = {n: dataclasses.replace(c, epochs=2) for n, c in todo.items()}
        run_phase(todo, out, phase, args.quick)
  tables = [table(out, ("grid",), "ptb_cpu_grid"), table(out, ("full", "seeds"), "ptb_cpu")]
  return [t for t in tables if t is not None]


def main(argv=None) -> None:
  import tyro

  args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
  keep_freed_host_memory()
  try:
    setup_cpu_devices(args.cpu_devices)
    paths = run_study(args)
  except (ValueError, OSError) as e:
    raise SystemExit(f"error: {e}") from None
  for p in paths:
    print(p.read_text())


if __name__ == "__main__":
  main()
