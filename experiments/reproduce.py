"""Every documented table and figure from one command, at one commit.

Each study in ``STUDIES`` is one command of this repository. ``reproduce.py`` runs the
CPU studies in turn and then publishes each one's small files (its Markdown and CSV tables,
plots, log, and per-epoch metrics and run summaries from ``lstmdrop_jax.results``, never
checkpoints) into ``docs/results/<study>/`` with a ``manifest.json``: the command, the
commit, the machine, the date and the wall time. The pages under ``docs/`` cite those
folders.

* ``cpu`` studies run by default; their cost is minutes to an hour each on a 2-core CPU.
* ``long`` studies take days on a CPU: they run only when named (``--only``), and resume
  where a killed run stopped.
* ``gpu`` studies are listed with their command and the commit of their last published
  run; they are never run on a CPU.

A study's runs resume after a kill, and a study is skipped when it is current: published
at a commit whose code equals the checkout's, where its code is the library, ``pyproject.toml``
and its own script (``Study.code``), so commits that touch only the documents, the tests,
another study's script or the docstrings and comments of its code keep it (``--force`` runs
it again). Re-running the command finishes what a killed one started. A failed study leaves
its published folder as it was.

``--quick`` runs every CPU and long study's pipeline at toy sizes (a few minutes in all)
into ``results/reproduce_quick/``, publishes there, and checks what each wrote. It never
touches ``docs/results/``.

  python experiments/reproduce.py --list        # the studies, their cost and last commit
  python experiments/reproduce.py --quick       # every pipeline at toy sizes (CI)
  python experiments/reproduce.py               # every CPU study, published to docs/results
  python experiments/reproduce.py --only overfit_GunPoint benchmark
  python experiments/reproduce.py --only ptb_cpu   # a long study (resumable)
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tyro

from lstmdrop_jax import results, tables

ROOT = Path(__file__).resolve().parents[1]
#: What a study publishes from the top of its output folder (plus ``log.txt``).
PUBLISHED = ("*.md", "*.csv", "*.png", "*.json")
#: A study's own file larger than this is left out (and said so): the repository keeps them
#: small. (The per-epoch metrics and run summaries are always published.)
MAX_BYTES = 1_000_000
#: What every study's results depend on (git pathspecs), besides its own script
#: (``Study.code``); this file only chooses what is published.
CODE = ("lstmdrop_jax", "pyproject.toml")


@dataclasses.dataclass(frozen=True)
class Study:
  """One documented study.

  Attributes:
    name: its folder under ``docs/results/``.
    page: the page that cites it.
    kind: ``cpu``, ``long`` or ``gpu`` (see the module's docstring).
    minutes: the full run's wall time on the machine its page names (its last run).
    argv: the full command; ``{out}`` is its output folder, ``{ptb}`` the PTB folder.
    quick: the same pipeline at toy sizes (None for a GPU study).
    runs: whether its output folder holds run folders (their metrics are published).
    last_run: the commit of its last run when that run's files were not kept (no manifest).
    uses: files of this repository its script imports or runs, besides ``CODE``.
    env: environment settings its command runs with (``NAME=value``).
  """

  name: str
  page: str
  kind: str
  minutes: float | None
  argv: tuple[str, ...]
  quick: tuple[str, ...] | None = None
  runs: bool = True
  last_run: str | None = None
  uses: tuple[str, ...] = ()
  env: tuple[str, ...] = ()

  def command(self, quick: bool = False) -> tuple[str, ...]:
    return self.quick if quick and self.quick else self.argv

  @property
  def code(self) -> tuple[str, ...]:
    """What its results depend on: ``CODE``, its script and what the script uses."""
    script = self.argv[1] if self.argv[0] == "bash" else self.argv[0]
    return (*CODE, script, *self.uses)


_TINY = ("--hidden", "8", "--layers", "1", "--epochs", "2")
STUDIES = (
  Study(
    "overfit_GunPoint", "docs/overfit.md", "cpu", 9.7,
    ("experiments/overfit.py", "--out", "{out}"),
    ("experiments/overfit.py", "--out", "{out}", "--seeds", "1", "--rates", "0.5", *_TINY,
     "--eval-every", "1"),
  ),
  Study(
    "overfit_synthetic", "docs/overfit.md", "cpu", 13.2,
    ("experiments/overfit.py", "--dataset", "synthetic", "--out", "{out}"),
    ("experiments/overfit.py", "--dataset", "synthetic", "--out", "{out}", "--seeds", "1",
     "--rates", "0.5", *_TINY, "--eval-every", "1"),
  ),
  Study(
    "variants", "docs/variants.md", "cpu", 15.9,
    ("experiments/variants.py", "--out", "{out}"),
    ("experiments/variants.py", "--out", "{out}", "--datasets", "JapaneseVowels", "--seeds",
     "2", "--rates", "0.5", "--placements", "input", "recurrent", *_TINY, "--eval-every", "1"),
  ),
  Study(
    "benchmark", "docs/benchmark.md", "cpu", 31.5,
    ("experiments/benchmark.py", "--out", "{out}"),
    ("experiments/benchmark.py", "--out", "{out}", "--datasets", "ItalyPowerDemand",
     "BasicMotions", "synthetic", "--settings", "none", "input", "recurrent", "--rates", "0.5",
     "--resamples", "2", *_TINY),
  ),
  Study(
    "ptb_small", "docs/ptb.md", "cpu", 31.2,
    ("experiments/ptb_zaremba.py", "--config", "small", "--data-dir", "{ptb}", "--out", "{out}"),
    ("experiments/ptb_zaremba.py", "--quick", "--epochs", "1", "--data-dir", "{ptb}", "--out",
     "{out}"),
  ),
  Study(
    "bench_cpu", "docs/PERFORMANCE.md", "cpu", 13.7,
    ("scripts/bench.py", "--device", "cpu", "--configs", "seed_clf", "ptb_small", "ptb_cpu",
     "ptb_cpu_blocked", "--impls", "ours", "flax", "torch", "--rounds", "5", "--json",
     "{out}/bench_cpu.json"),
    ("scripts/bench.py", "--device", "cpu", "--configs", "seed_clf", "--impls", "ours",
     "--warmup", "0", "--steps", "1", "--repeats", "1", "--json", "{out}/bench_cpu.json"),
    runs=False, uses=("scripts/bench_models.py", "experiments/overfit.py"),  # its modes
  ),
  Study(
    "softmax_cpu", "docs/PERFORMANCE.md", "cpu", 4.0,
    ("scripts/softmax_bench.py", "--rounds", "5", "--out", "{out}"),
    ("scripts/softmax_bench.py", "--impls", "ours", "torch", "--rounds", "1", "--warmup", "0",
     "--steps", "1", "--repeats", "1", "--out", "{out}"),
    runs=False, uses=("scripts/bench.py", "scripts/bench_models.py"),
  ),
  Study(
    "ptb_cpu", "docs/ptb.md", "long", None,
    ("experiments/ptb_cpu.py", "--data-dir", "{ptb}", "--out", "{out}"),
    ("experiments/ptb_cpu.py", "--quick", "--data-dir", "{ptb}", "--out", "{out}"),
  ),
  Study(
    "ptb_h200", "docs/ptb.md", "gpu", 12.9,
    ("bash", "experiments/gpu_ptb.sh"), last_run="867df64",
    uses=("experiments/ptb_zaremba.py",),
  ),
  Study(
    "ptb_h200_gal", "docs/ptb.md", "gpu", 5.2,
    ("bash", "experiments/gpu_ptb.sh"), uses=("experiments/ptb_zaremba.py",),
    env=("PTB_DIR=.ptb", "CONFIGS=gal", "MC_SAMPLES=100"),
  ),
  Study(
    "gpu_bench", "docs/PERFORMANCE.md", "gpu", 6.0,
    ("bash", "scripts/gpu_bench.sh"), runs=False,
    uses=("scripts/bench.py", "scripts/bench_models.py", "experiments/overfit.py"),
  ),
)  # fmt: skip
BY_NAME = {s.name: s for s in STUDIES}


@dataclasses.dataclass
class Args:
  only: tuple[str, ...] = ()
  """Studies to run, by name (default: every cpu study; long studies run only when named)."""
  quick: bool = False
  """Every cpu and long study's pipeline at toy sizes, published under --out, not docs/."""
  list: bool = False
  """Print the studies, their cost, command and last published commit, and stop."""
  force: bool = False
  """Run a study even if it is already published at the current commit."""
  jobs: int | None = None
  """Studies run at once (default: one; with --quick, one per usable core). A full run
  records its wall time, so full runs go one at a time unless told otherwise."""
  ptb_dir: Path = Path("../shared/data/ptb")
  """Folder with ptb.{train,valid,test}.txt, for the PTB studies."""
  out: Path | None = None
  """Where the studies write (default results/reproduce, or results/reproduce_quick)."""
  docs: Path = ROOT / "docs" / "results"
  """Where full runs publish (each study in its own folder)."""


def selected(args: Args) -> list[Study]:
  """The studies this invocation runs, in ``STUDIES``' order."""
  unknown = sorted(set(args.only) - set(BY_NAME))
  if unknown:
    raise ValueError(f"--only: no study {', '.join(unknown)}; the studies: {', '.join(BY_NAME)}")
  if args.only:
    gpu = [n for n in args.only if BY_NAME[n].kind == "gpu"]
    if gpu:
      raise ValueError(f"--only: {', '.join(gpu)} needs a GPU: run its command there (--list)")
    return [s for s in STUDIES if s.name in args.only]
  kinds = ("cpu", "long") if args.quick else ("cpu",)
  return [s for s in STUDIES if s.kind in kinds]


def manifest(folder: Path) -> dict | None:
  """A published study's ``manifest.json``, or None."""
  try:
    return json.loads((folder / "manifest.json").read_text())
  except (OSError, ValueError):
    return None


def current(published: str | None, code: Sequence[str], root: Path = ROOT) -> bool:
  """Whether a study published at commit ``published`` ran the code checked out in ``root``:
  no file of ``code`` (git pathspecs: ``Study.code``) differs between that commit and the
  working tree, other than in the docstrings and comments of Python files."""
  if not published or published.endswith("+changes"):
    return False  # not a commit, or one with uncommitted changes
  if published == results.commit(root):
    return True
  git = ["git", "diff", "--name-only", "--no-renames", published, "--", *code]
  diff = subprocess.run(git, cwd=root, capture_output=True, text=True)
  if diff.returncode != 0:
    return False  # not a commit of this repository
  return all(_same_program(published, path, root) for path in diff.stdout.split())


def _same_program(commit: str, path: str, root: Path) -> bool:
  """Whether ``path`` is the same program at ``commit`` as in the working tree: a Python
  file parses to the same tree once docstrings are dropped (comments never reach the tree);
  a shell script has the same lines once its blank lines and whole-line comments (but not
  the ``#!`` line) are dropped. Any other file, or one added, removed or unparsable on
  either side, is not the same."""
  program = {".py": _program, ".sh": _shell_program}.get(Path(path).suffix)
  if program is None or not (root / path).is_file():
    return False
  old = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=root, capture_output=True)
  if old.returncode != 0:
    return False
  try:
    return program(old.stdout.decode()) == program((root / path).read_text())
  except (SyntaxError, UnicodeDecodeError, ValueError):
    return False


def _shell_program(source: str) -> list[str]:
  """``source``'s lines without blank lines and lines that are only a comment."""
  lines = source.splitlines()
  shebang = lines[:1] if lines and lines[0].startswith("#!") else []
  rest = lines[len(shebang) :]
  return shebang + [ln for ln in rest if ln.strip() and not ln.lstrip().startswith("#")]


def _program(source: str) -> str:
  """``source``'s syntax tree, as text, without line numbers and without the statements that
  are a bare string (docstrings, attribute docstrings): they never run."""

  class Strip(ast.NodeTransformer):
    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
      text = isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
      return None if text else node

  return ast.dump(Strip().visit(ast.parse(source)))


def listing(docs: Path) -> str:
  """The ``--list`` table."""
  rows = []
  for s in STUDIES:
    m = manifest(docs / s.name) or {}
    minutes = m.get("wall_minutes", s.minutes)
    cost = "days" if s.kind == "long" and minutes is None else f"{minutes:g} min"
    cost += " (resumed: the last invocation's)" if m.get("resumed") else ""
    last = f"{s.last_run} (files not kept)" if s.last_run else "not published"
    commit = m.get("commit", last)
    if "commit" in m and not current(m["commit"], s.code):
      commit += " (its code has changed since)"
    rows.append([s.name, s.kind, cost, commit, s.page, " ".join((*s.env, *s.argv))])
  header = ["study", "kind", "wall time (last run)", "commit", "page", "command"]
  return tables.markdown(header, rows)


def publish(study: Study, out: Path, dest: Path, record: dict) -> Path:
  """Copies ``study``'s small files from ``out`` to ``dest/<name>/``, replacing the folder
  whole: a new folder is written beside it and then renamed, so a failure leaves the old."""
  target = dest / study.name
  staging = dest / f".{study.name}.new"
  shutil.rmtree(staging, ignore_errors=True)
  staging.mkdir(parents=True)
  left_out = []
  for path in sorted({p for pattern in (*PUBLISHED, "log.txt") for p in out.glob(pattern)}):
    if path.stat().st_size > MAX_BYTES:
      left_out.append(path.name)
      continue
    shutil.copy2(path, staging / path.name)
  log = staging / "log.txt"
  if log.exists():
    log.write_text(without_local_paths(log.read_text(), out))
  if study.runs:
    results.export_runs(out, staging)
  files = sorted(p.name for p in staging.iterdir())
  record = dict(record, files=files, left_out=left_out)
  (staging / "manifest.json").write_text(json.dumps(record, indent=2) + "\n")
  old = dest / f".{study.name}.old"
  shutil.rmtree(old, ignore_errors=True)
  if target.exists():
    target.rename(old)
  staging.rename(target)
  shutil.rmtree(old, ignore_errors=True)
  return target


def without_local_paths(text: str, out: Path) -> str:
  """``text`` with this machine's paths made portable: the study's output folder becomes
  ``{out}`` (as in the manifest's command) and the repository's root is dropped."""
  text = text.replace(str(out.resolve()), "{out}").replace(str(out), "{out}")
  return text.replace(f"{ROOT}{os.sep}", "")


def run_study(study: Study, args: Args, out: Path, dest: Path, commit: str | None) -> dict | None:
  """Runs one study; its manifest's record, or None (said in one line) if it failed."""
  fill = {"out": str(out), "ptb": str(args.ptb_dir)}
  argv = [a.format(**fill) for a in study.command(args.quick)]
  cmd = [sys.executable, *argv] if argv[0].endswith(".py") else argv
  out.mkdir(parents=True, exist_ok=True)
  # Runs left by a killed invocation resume: the wall time is then this invocation's alone.
  resumed = not args.quick and bool(results.run_folders(out))
  print(f"{study.name}: {' '.join(argv)}" + (" (resuming)" if resumed else ""), flush=True)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
  t0 = time.perf_counter()
  with open(out / "log.txt", "w") as log:
    code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
  minutes = (time.perf_counter() - t0) / 60
  if code != 0:
    print(f"error: {study.name} failed (exit {code}) after {minutes:.1f} min; its log: "
          f"{out / 'log.txt'}; {dest / study.name} is unchanged", file=sys.stderr)  # fmt: skip
    return None
  record = {
    "study": study.name, "page": study.page, "command": " ".join(study.command(args.quick)),
    "quick": args.quick, "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC",
    time.gmtime()), "wall_minutes": round(minutes, 1), "resumed": resumed,
    # Not this process's JAX devices: each study chooses its own (on a CPU one per core).
    "machine": {k: v for k, v in results.machine().items() if k != "devices"},
  }  # fmt: skip
  lacking = missing_files(study, out)
  if lacking:
    print(f"error: {study.name} wrote no {' or '.join(lacking)} in {out}; "
          f"{dest / study.name} is unchanged", file=sys.stderr)  # fmt: skip
    return None
  print(f"{study.name}: {minutes:.1f} min", flush=True)
  return record


def missing_files(study: Study, out: Path) -> list[str]:
  """What a study's output folder lacks: a table (Markdown or JSON) at its top, and run
  folders when the study has them."""
  lacking = [] if any(out.glob("*.md")) or any(out.glob("*.json")) else ["table"]
  return lacking + (["run folder"] if study.runs and not results.run_folders(out) else [])


def check_inputs(studies: Sequence[Study], args: Args) -> None:
  """Everything the studies need, before any of them starts."""
  needs_ptb = [s.name for s in studies if "{ptb}" in " ".join(s.command(args.quick))]
  names = [f"ptb.{part}.txt" for part in ("train", "valid", "test")]
  missing = [n for n in names if not (args.ptb_dir / n).is_file()]
  if needs_ptb and missing:
    raise ValueError(
      f"--ptb-dir {args.ptb_dir}: no {', '.join(missing)} (needed by {', '.join(needs_ptb)}); "
      "point --ptb-dir at Mikolov's PTB files or leave those studies out with --only"
    )


def main(argv: Sequence[str] | None = None) -> None:
  args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
  out = args.out or Path("results") / ("reproduce_quick" if args.quick else "reproduce")
  dest = out / "published" if args.quick else args.docs
  if args.list:
    print(listing(args.docs), end="")
    return
  try:
    if args.jobs is not None and args.jobs < 1:
      raise ValueError(f"--jobs {args.jobs}: run at least one study at a time (--jobs 1)")
    studies = selected(args)
    check_inputs(studies, args)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  commit = results.commit()
  todo = []
  for study in studies:
    done = manifest(dest / study.name)
    if not args.quick and not args.force and done and current(done.get("commit"), study.code):
      print(f"{study.name}: already published at {done['commit']}, whose code is the "
            "checkout's (--force runs it again)")  # fmt: skip
      continue
    if args.quick:
      shutil.rmtree(out / study.name, ignore_errors=True)  # toy runs start afresh
    todo.append(study)
  # Each study is its own process; most of a toy run is XLA compiling on one thread. The
  # costliest start first (by their full runs' wall time), so none is left to run alone.
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  jobs = args.jobs or ((cores or 1) if args.quick else 1)
  order = sorted(todo, key=lambda s: -(s.minutes or float("inf"))) if jobs > 1 else todo
  with ThreadPoolExecutor(max_workers=jobs) as pool:
    runs = {s.name: pool.submit(run_study, s, args, out / s.name, dest, commit) for s in order}
  records = [runs[s.name].result() for s in todo]
  failed = [s.name for s, r in zip(todo, records, strict=True) if r is None]
  finished = [(s, r) for s, r in zip(todo, records, strict=True) if r is not None]
  # Published once every study has run: none runs beside files this invocation changed,
  # so the commit a study records (benchmark.json's) is the clean one the manifests name.
  for study, record in finished:
    print(f"{study.name}: published {publish(study, out / study.name, dest, record)}")
  if failed:
    raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
  main()
