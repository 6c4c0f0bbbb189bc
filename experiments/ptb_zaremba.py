"""Penn Treebank word-level language modelling: Zaremba et al. (2014), Table 1.

Zaremba, Sutskever and Vinyals regularise a two-layer LSTM with dropout at
exactly this library's three placements (embedding -> layer 1, between the
layers, top layer -> softmax), a fresh mask at every step and none on
``h_{t-1}``. This script trains their small (non-regularised), medium and
large configurations and writes our perplexities next to the paper's; on
the medium configuration it also runs the variants: each placement removed
in turn, time-locked masks instead of per-step ones, and Gal & Ghahramani's
(2016) variational LSTM. The medium model and its variants train as one
group, one vmapped step for all six (``train_runs``).

Gal & Ghahramani's variational medium LSTM (``medium_variational``): masks
locked over time on the inputs of both layers and on the output (0.5), on
``h_{t-1}`` (``recurrent``, 0.2) and whole-word embedding dropout (0.2), on
Zaremba's medium recipe. As in their "untied weights" model, the masks on
a layer's input and on ``h_{t-1}`` are drawn per gate (``per_gate``). The
rates follow their published Torch code (yaringal/BayesianRNN, LM_code),
which ties the word and recurrent rates and the input and output rates
(0.3/0.5 for their large model; 0.2/0.5 is the pair of its grid for the
medium size). Two differences remain: a dropped word is dropped for the
whole batch (theirs: for one sequence), and no weight decay (theirs: 1e-7,
which shrinks the weights by under 1% over the 39 epochs; the runs of a
group share one optimiser).

The loss is theirs: the sum over the unrolled steps of the batch-mean
negative log-likelihood, so their learning rate (1) and clipping thresholds
(5, 10) apply unchanged. Perplexity is ``exp(mean NLL per token)`` over a
whole split: validation in the training batch's number of contiguous streams
and test as one stream (batch 1), as in their code; the hidden state is
carried from window to window and reset at the start of each evaluation and
epoch.

Commands::

  python experiments/ptb_zaremba.py --config small          # CPU (about half an hour on 2 cores)
  python experiments/ptb_zaremba.py --config medium         # GPU (experiments/gpu_ptb.sh)
  python experiments/ptb_zaremba.py --config medium --variants
  python experiments/ptb_zaremba.py --config gal --mc-samples 100   # GPU
  python experiments/ptb_zaremba.py --quick                 # a CPU smoke test (seconds)

Outputs go to ``results/ptb/``: ``runs/<name>/`` run folders (resumable),
``ptb_<config>[_quick][_<N>ep].{md,csv}`` (e.g. ``ptb_small.md``) and, with
``--variants``, ``ptb_variants[_quick][_<N>ep].{md,csv}``. Results: docs/ptb.md.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from lstmdrop_jax import tables
from lstmdrop_jax.dropout import PLACEMENTS, DropoutConfig
from lstmdrop_jax.parallel import setup_cpu_devices
from lstmdrop_jax.platform import keep_freed_host_memory
from lstmdrop_jax.run_folder import read_jsonl
from lstmdrop_jax.train import Config, train_runs

# Paper's Table 1 (validation, test perplexity); Gal & Ghahramani (2016) for
# the variational medium model with untied masks.
PAPER = {
  "small": (120.7, 114.5),
  "medium": (86.2, 82.7),
  "large": (82.2, 78.4),
  "medium_variational": (81.9, 79.7),
}


def zaremba(name: str, data_dir: str) -> Config:
  """The paper's configurations (and its reference code's details)."""
  common = dict(
    dataset="ptb",
    data_dir=data_dir,
    layers=2,
    optimizer="sgd",
    learning_rate=1.0,
    batch_size=20,
    forget_bias=0.0,
    eval_every=1,
    checkpoint_every=1,
    keep_checkpoints=1,
  )
  if name == "small":
    return Config(hidden=200, num_steps=20, init_scale=0.1, lr_decay=2.0, decay_after=4,
                  epochs=13, clip_norm=5.0, **common)  # fmt: skip
  if name == "medium":
    return Config(hidden=650, num_steps=35, init_scale=0.05, lr_decay=1.2, decay_after=6,
                  epochs=39, clip_norm=5.0, dropout=DropoutConfig(0.5, 0.5, 0.5),
                  **common)  # fmt: skip
  if name == "large":
    return Config(hidden=1500, num_steps=35, init_scale=0.04, lr_decay=1.15, decay_after=14,
                  epochs=55, clip_norm=10.0, dropout=DropoutConfig(0.65, 0.65, 0.65),
                  **common)  # fmt: skip
  raise ValueError(f"unknown configuration {name!r}; valid ones are small, medium, large")


#: Gal & Ghahramani's variational medium LSTM (see the module docstring).
GAL_MEDIUM = DropoutConfig(
  input=0.5,
  between=0.5,
  output=0.5,
  recurrent=0.2,
  embedding=0.2,
  time_locked=True,
  per_gate=True,
)


def variants(medium: Config) -> dict[str, Config]:
  """The medium model with each placement removed, with time-locked masks, and Gal &
  Ghahramani's variational LSTM: runs that differ only in dropout (one group)."""
  d = medium.dropout
  return {
    "medium_no_input": dataclasses.replace(medium, dropout=d.replace(input=0.0)),
    "medium_no_between": dataclasses.replace(medium, dropout=d.replace(between=0.0)),
    "medium_no_output": dataclasses.replace(medium, dropout=d.replace(output=0.0)),
    "medium_locked": dataclasses.replace(medium, dropout=d.replace(time_locked=True)),
    "medium_variational": dataclasses.replace(medium, dropout=GAL_MEDIUM),
  }


#: Seeds of the variational group (``--config gal``) and its Monte-Carlo passes.
GAL_SEEDS = (0, 1, 2)
GAL_MC_SAMPLES = 100


def gal(medium: Config, mc_samples: int = GAL_MC_SAMPLES) -> dict[str, Config]:
  """Gal & Ghahramani's variational medium LSTM over ``GAL_SEEDS``, one group. Each run
  keeps its final and best checkpoint (``checkpoint_every`` = epochs), and its best is
  also scored with ``mc_samples`` Monte-Carlo dropout passes over the test set."""
  run = dataclasses.replace(
    medium, dropout=GAL_MEDIUM, mc_samples=mc_samples, checkpoint_every=medium.epochs
  )
  return {f"medium_variational_s{s}": dataclasses.replace(run, seed=s) for s in GAL_SEEDS}


def quick(config: Config) -> Config:
  """A CPU smoke test: the same recipe, 2x32 units, 2 epochs of 10 steps, scored on
  the first 4,000 tokens of validation and test."""
  tokens = config.batch_size * config.num_steps * 10 + config.batch_size
  return dataclasses.replace(
    config, hidden=32, epochs=2, decay_after=1, train_tokens=tokens, eval_tokens=4000
  )


@dataclasses.dataclass(frozen=True)
class Args:
  """Zaremba et al. (2014) on PTB: our perplexities next to the paper's."""

  config: str = "small"
  """small, medium, large, or gal (Gal & Ghahramani's variational medium LSTM over three
  seeds, with Monte-Carlo test perplexity)."""
  mc_samples: int = GAL_MC_SAMPLES
  """--config gal: Monte-Carlo dropout passes over the test set."""
  variants: bool = False
  """Also train the medium variants (placements removed; time-locked masks; Gal &
  Ghahramani's variational LSTM), all six runs as one group."""
  data_dir: str = "../shared/data/ptb"
  """Folder with ptb.{train,valid,test}.txt (Mikolov's simple-examples/data)."""
  out: Path = Path("results/ptb")
  quick: bool = False
  """2x32 units, 2 short epochs, scored on 4,000 tokens: checks the pipeline on a CPU."""
  epochs: int | None = None
  """Override the number of epochs (e.g. to fit a time budget); the table says so."""
  cpu_devices: int | None = None
  """CPU: present the CPU as this many JAX devices (default: one per usable core, or
  $LSTMDROP_CPU_DEVICES; 1 switches it off). One run trains on one of them: splitting a
  language model's batch over CPU cores does not pay (parallel.plan)."""


def _dropout_label(d: DropoutConfig) -> str:
  """``input/between/output`` rates, the others by name, ``locked`` if any is, and
  ``per gate`` for per-gate masks."""
  label = "/".join(f"{getattr(d, p):g}" for p in ("input", "between", "output"))
  label += "".join(f", {p} {getattr(d, p):g}" for p in d.active() if p not in PLACEMENTS)
  return label + (" locked" if d.time_locked else "") + (" per gate" if d.per_gate else "")


def _row(name: str, summary: dict, cfg: Config, records: list[dict], paper: str) -> dict:
  final = summary["final"]
  train_ppl = [r for r in records if "train_ppl" in r]
  val, test = PAPER.get(paper, (None, None))
  mc = {"mc test ppl": round(summary["mc"]["test/ppl"], 1)} if "mc" in summary else {}
  return {
    "model": name,
    "size": f"{cfg.layers}x{cfg.hidden}",
    "dropout": _dropout_label(cfg.dropout),
    "epochs": summary["epochs"],
    "paper val": val,
    "paper test": test,
    "train ppl": round(train_ppl[-1]["train_ppl"], 1) if train_ppl else None,
    "val ppl": round(final["val/ppl"], 1),
    "test ppl": round(final["test/ppl"], 1),
    **mc,
    "wall time (min)": round(summary["wall_time_s"] / 60, 1),
    "device": summary["device"],
  }


def write_table(rows: list[dict], out: Path, stem: str) -> Path:
  """``{stem}.md`` and ``{stem}.csv`` under ``out``; returns the Markdown table's path."""
  header = list(rows[0])
  cells = [[r[c] for c in header] for r in rows]
  return tables.write_tables(out, stem, header, cells, formats=("md", "csv"))["md"]


def run_group(jobs: dict[str, Config], out: Path, suffix: str = "") -> list[dict]:
  """Trains the jobs as one group (one compiled step) into ``out/runs/<name><suffix>``
  and returns their table rows (the paper's figures by ``name``)."""
  workdirs = [out / "runs" / f"{name}{suffix}" for name in jobs]
  summaries = train_runs(list(jobs.values()), workdirs)
  paper = lambda name: re.sub(r"_s\d+$", "", name)  # a seed's run: its recipe's row
  return [
    _row(f"{name}{suffix}", s, cfg, read_jsonl(w / "metrics.jsonl"), paper=paper(name))
    for (name, cfg), s, w in zip(jobs.items(), summaries, workdirs, strict=True)
  ]


def run_study(
  config: str = "small",
  *,
  variants_too: bool = False,
  data_dir: str = "../shared/data/ptb",
  out: Path = Path("results/ptb"),
  quick_run: bool = False,
  epochs: int | None = None,
  checkpoints: bool = True,
  mc_samples: int = GAL_MC_SAMPLES,
) -> Path:
  """Trains the jobs and writes the table; returns the Markdown table's path.

  Callable without the command-line dependency (experiments/gpu_ptb.sh uses it).
  ``checkpoints=False`` writes none (the runs cannot resume): for a job whose scratch
  disk does not outlast it, where writing a group's states each epoch costs training
  time. ``config="gal"`` keeps its final and best checkpoints either way: the
  Monte-Carlo evaluation reads the best.
  """
  if config == "gal":
    jobs = gal(zaremba("medium", data_dir), mc_samples)
  else:
    jobs = {config: zaremba(config, data_dir)}
  base = next(iter(jobs.values()))
  if variants_too:
    if config != "medium":
      raise ValueError("the variants apply to --config medium")
    jobs.update(variants(base))
  suffix = ""
  if quick_run:
    jobs, suffix = {k: quick(c) for k, c in jobs.items()}, "_quick"
  if epochs is not None:
    jobs = {k: dataclasses.replace(c, epochs=epochs) for k, c in jobs.items()}
    suffix += f"_{epochs}ep"
  if config == "gal":
    jobs = {k: dataclasses.replace(c, checkpoint_every=c.epochs) for k, c in jobs.items()}
  elif not checkpoints:
    jobs = {k: dataclasses.replace(c, checkpoint_every=0) for k, c in jobs.items()}
  for c in jobs.values():
    c.validate()
  rows = run_group(jobs, Path(out), suffix)
  stem = f"ptb_{'variants' if variants_too else config}{suffix}"
  return write_table(rows, Path(out), stem)


def main(argv=None) -> None:
  import tyro

  args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
  keep_freed_host_memory()
  try:
    setup_cpu_devices(args.cpu_devices)
    path = run_study(
      args.config,
      variants_too=args.variants,
      data_dir=args.data_dir,
      out=args.out,
      quick_run=args.quick,
      epochs=args.epochs,
      mc_samples=args.mc_samples,
    )
  except (ValueError, OSError) as e:
    raise SystemExit(f"error: {e}") from None
  print(path.read_text())


if __name__ == "__main__":
  main()
