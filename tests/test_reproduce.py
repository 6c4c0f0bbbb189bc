"""experiments/reproduce.py: which studies run, what a run publishes, and that a failed or
repeated run leaves the published files as they were."""

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import load_script

rp = load_script("experiments/reproduce.py", "reproduce")

#: A study's command: writes a table, a run folder and a large file; exits 3 with FAIL set.
SCRIPT = """
import json, os, sys, time
from pathlib import Path
out = Path(sys.argv[1])
if os.environ.get("FAIL"):
  sys.exit(3)
if os.environ.get("TOGETHER"):  # wait (10 s at most) for the other study to start
  (Path(os.environ["TOGETHER"]) / out.name).touch()
  deadline = time.time() + 10
  while len(os.listdir(os.environ["TOGETHER"])) < 2:
    if time.time() > deadline:
      sys.exit(4)
    time.sleep(0.05)
if os.environ.get("SEEN"):  # what is published while this study runs
  with open(os.environ["SEEN"], "a") as f:
    f.write(" ".join(sorted(os.listdir(os.environ["DOCS"]))) + "\\n")
(out / "study.md").write_text("| a |\\n| --- |\\n| 1 |\\n")
(out / "big.csv").write_text("x" * 5000)
run = out / "runs" / "r0"
run.mkdir(parents=True, exist_ok=True)
(run / "config.json").write_text(json.dumps({"seed": 0}))
(run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train/loss": 0.5}) + "\\n")
(run / "summary.json").write_text(json.dumps({"epochs": 1}))
print("trained", run.resolve())
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
  """One cpu study (the script above), one long and one gpu study; docs in tmp_path."""
  script = tmp_path / "study.py"
  script.write_text(SCRIPT)
  studies = (
    rp.Study("toy", "docs/toy.md", "cpu", 1.0, (str(script), "{out}")),
    rp.Study("slow", "docs/toy.md", "long", None, (str(script), "{out}")),
    rp.Study("card", "docs/toy.md", "gpu", 5.0, ("bash", "gpu.sh"), runs=False),
    rp.Study("old", "docs/toy.md", "gpu", 5.0, ("bash", "gpu.sh"), last_run="def5678"),
  )
  monkeypatch.setattr(rp, "STUDIES", studies)
  monkeypatch.setattr(rp, "BY_NAME", {s.name: s for s in studies})
  monkeypatch.setattr(rp, "MAX_BYTES", 1000)
  monkeypatch.setattr(rp.results, "commit", lambda *_: "abc1234")
  docs = tmp_path / "docs"
  return lambda *argv: rp.main(["--out", str(tmp_path / "work"), "--docs", str(docs), *argv]), docs


def test_a_full_run_publishes_tables_metrics_and_a_manifest(toy, capsys):
  run, docs = toy
  run()
  folder = docs / "toy"
  assert sorted(p.name for p in folder.iterdir()) == [
    "epochs.csv.gz", "log.txt", "manifest.json", "study.md", "summaries.jsonl.gz",
  ]  # fmt: skip
  m = json.loads((folder / "manifest.json").read_text())
  assert m["commit"] == "abc1234" and m["study"] == "toy" and not m["quick"]
  assert m["resumed"] is False
  log = (folder / "log.txt").read_text()
  assert m["left_out"] == ["big.csv"] and "trained {out}/runs/r0" in log
  assert str(docs.parent) not in log  # no path of this machine
  assert m["machine"]["cpu_count"] >= 1 and m["wall_minutes"] >= 0
  assert "devices" not in m["machine"]  # the parent's devices are not the study's
  assert not (docs / "slow").exists()  # a long study runs only when named
  assert "toy: already published at abc1234" not in capsys.readouterr().out
  run()  # the same commit: nothing to do
  assert "toy: already published at abc1234" in capsys.readouterr().out
  run("--force")  # its run folders are there: the runs resume, the wall time is partial
  assert "(resuming)" in capsys.readouterr().out
  assert json.loads((folder / "manifest.json").read_text())["resumed"] is True


def test_studies_publish_once_all_have_run(toy, tmp_path, monkeypatch):
  """No study runs beside files the same invocation published (they would make the
  checkout's commit read ``+changes`` to the studies that record it)."""
  run, docs = toy
  script = rp.STUDIES[0].argv[0]
  two = (rp.Study("one", "docs/toy.md", "cpu", 1.0, (script, "{out}")),
         rp.Study("two", "docs/toy.md", "cpu", 1.0, (script, "{out}")))  # fmt: skip
  monkeypatch.setattr(rp, "STUDIES", two)
  monkeypatch.setattr(rp, "BY_NAME", {s.name: s for s in two})
  docs.mkdir()
  monkeypatch.setenv("SEEN", str(tmp_path / "seen.txt"))
  monkeypatch.setenv("DOCS", str(docs))
  run()
  assert (tmp_path / "seen.txt").read_text() == "\n\n"  # nothing published while they ran
  assert sorted(p.name for p in docs.iterdir()) == ["one", "two"]


def test_a_study_stays_current_while_what_its_results_do_not_depend_on_changes(tmp_path):
  git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
  head = lambda: git("rev-parse", "--short", "HEAD").stdout.decode().strip()
  commit = lambda: git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "c")
  ours = rp.Study("ours", "docs/page.md", "cpu", 1.0, ("experiments/ours.py", "{out}"),
                  uses=("scripts/helper.py",))  # fmt: skip
  code = ours.code
  assert code == ("lstmdrop_jax", "pyproject.toml", "experiments/ours.py", "scripts/helper.py")
  paths = ("lstmdrop_jax/m.py", "pyproject.toml", "experiments/ours.py", "scripts/helper.py",
           "docs/page.md", "tests/test_m.py", "experiments/reproduce.py",
           "experiments/other.py")  # fmt: skip
  for path in paths:
    (tmp_path / path).parent.mkdir(exist_ok=True)
    (tmp_path / path).write_text("1\n")
  git("init", "-q")
  git("add", ".")
  commit()
  published = head()
  assert rp.current(published, code, tmp_path)
  for path in paths[4:]:  # what its results do not depend on: another study's script too
    (tmp_path / path).write_text("2\n")
  commit()
  assert head() != published and rp.current(published, code, tmp_path)
  for path in paths[:4]:  # each file it depends on counts, uncommitted or committed
    (tmp_path / path).write_text("2\n")
    assert not rp.current(published, code, tmp_path), path
    git("checkout", "--", path)
  (tmp_path / "experiments/ours.py").write_text("3\n")
  commit()
  assert not rp.current(published, code, tmp_path)
  assert not rp.current(f"{published}+changes", code, tmp_path)
  assert not rp.current(None, code, tmp_path)


MODULE = '''"""A module."""
RATE = 0.5  # a comment


def f(x):
  """Scaled."""
  return x * RATE
'''


@pytest.mark.parametrize(
  "edit, same",
  [
    (("A module.", "What the module does now."), True),  # a docstring
    (("# a comment", "# another comment"), True),
    (('"""Scaled."""', '"""Scaled by RATE,\n  over two lines."""'), True),
    (("RATE = 0.5  # a comment", 'RATE = 0.5\n"""The rate."""'), True),  # attribute docstring
    (("RATE = 0.5", "RATE = 0.25"), False),  # a constant
    (("x * RATE", "RATE * x"), False),  # an expression
    (('"""Scaled."""', '"""Scaled."""\n  print(x)'), False),  # an expression statement
    (('"""Scaled."""', "'''Scaled.'''\n  'Scaled.'"), True),
    (("return x * RATE", "return x * RATE +"), False),  # no longer parses
  ],
)
def test_a_study_stays_current_through_docstrings_and_comments_alone(tmp_path, edit, same):
  git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
  path = tmp_path / "lstmdrop_jax" / "m.py"
  path.parent.mkdir()
  path.write_text(MODULE)
  git("init", "-q")
  git("add", ".")
  git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
  published = git("rev-parse", "--short", "HEAD").stdout.decode().strip()
  old, new = edit
  assert old in MODULE
  path.write_text(MODULE.replace(old, new))
  assert rp.current(published, ("lstmdrop_jax",), tmp_path) is same
  path.unlink()  # a removed file
  assert not rp.current(published, ("lstmdrop_jax",), tmp_path)
  script = "#!/usr/bin/env bash\n# Trains.\nRATE=0.5  # the rate\necho $RATE\n"
  other = tmp_path / "lstmdrop_jax" / "run.sh"
  other.write_text(script)
  data = tmp_path / "lstmdrop_jax" / "rates.txt"  # read as data, never as a program
  data.write_text("# rates\n0.5\n")
  git("add", ".")
  git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
  published = git("rev-parse", "--short", "HEAD").stdout.decode().strip()
  for old, new, same in [
    ("# Trains.\n", "# Trains the model,\n\n  # in two lines.\n", True),  # whole-line comments
    ("RATE=0.5", "RATE=0.25", False),
    ("# the rate", "# the step's rate", False),  # a trailing comment: the line is code
    ("bash", "sh", False),  # the interpreter
  ]:
    other.write_text(script.replace(old, new))
    assert rp.current(published, ("lstmdrop_jax",), tmp_path) is same, new
  other.write_text(script)
  data.write_text("# the rates\n0.5\n")
  assert not rp.current(published, ("lstmdrop_jax",), tmp_path)


def test_each_study_depends_on_its_script_and_what_the_script_imports():
  for study in rp.STUDIES:
    assert all((rp.ROOT / path).exists() for path in study.code), study.name
  assert "scripts/bench_models.py" in rp.BY_NAME["bench_cpu"].code  # bench.py imports it
  assert rp.BY_NAME["ptb_h200"].code[2:] == ("experiments/gpu_ptb.sh", "experiments/ptb_zaremba.py")
  scripts = {s.code[2] for s in rp.STUDIES}
  for path in scripts:  # a script that imports another of the repository's lists it in uses
    text = (rp.ROOT / path).read_text()
    for other in scripts | {"scripts/bench_models.py"}:
      stem = Path(other).stem
      if other != path and (f"import {stem}" in text or f"{stem}.py" in text):
        study = next(s for s in rp.STUDIES if s.code[2] == path)
        assert other in study.code, (path, other)


def test_a_failed_study_leaves_the_published_folder_as_it_was(toy, monkeypatch, capsys):
  run, docs = toy
  run()
  before = {p.name: p.read_bytes() for p in (docs / "toy").iterdir()}
  monkeypatch.setenv("FAIL", "1")
  with pytest.raises(SystemExit, match="failed: toy"):
    run("--force")
  assert "error: toy failed (exit 3)" in capsys.readouterr().err
  assert {p.name: p.read_bytes() for p in (docs / "toy").iterdir()} == before
  assert [p.name for p in docs.iterdir()] == ["toy"]  # no staging folder left behind


def test_quick_publishes_under_its_output_folder_and_never_in_docs(toy, tmp_path):
  run, docs = toy
  run("--quick")
  assert not docs.exists()
  published = tmp_path / "work" / "published"
  assert sorted(p.name for p in published.iterdir()) == ["slow", "toy"]  # cpu and long
  assert json.loads((published / "toy" / "manifest.json").read_text())["quick"]


def test_quick_runs_studies_at_once(toy, tmp_path, monkeypatch):
  run, _ = toy
  (tmp_path / "together").mkdir()
  monkeypatch.setenv("TOGETHER", str(tmp_path / "together"))
  run("--quick", "--jobs", "2")  # one after the other, the first would wait in vain
  assert sorted(p.name for p in (tmp_path / "together").iterdir()) == ["slow", "toy"]


def test_a_study_that_writes_no_table_fails(toy, tmp_path, monkeypatch):
  run, _ = toy
  empty = tmp_path / "empty.py"
  empty.write_text("print('nothing')")
  study = rp.Study("toy", "docs/toy.md", "cpu", 1.0, (str(empty), "{out}"))
  monkeypatch.setattr(rp, "STUDIES", (study,))
  monkeypatch.setattr(rp, "BY_NAME", {"toy": study})
  with pytest.raises(SystemExit, match="failed: toy"):
    run()


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--only", "nope"], "--only: no study nope; the studies: toy, slow, card"),
    (["--only", "card"], "--only: card needs a GPU: run its command there (--list)"),
    (["--jobs", "0"], "--jobs 0: run at least one study at a time (--jobs 1)"),
  ],
)
def test_bad_study_names_are_one_line(toy, argv, message):
  run, _ = toy
  with pytest.raises(
    SystemExit, match="^error: " + message.replace("(", r"\(").replace(")", r"\)")
  ):
    run(*argv)


def test_a_missing_ptb_folder_is_refused_before_anything_runs(tmp_path):
  args = rp.Args(ptb_dir=tmp_path / "none", only=("ptb_small", "overfit_GunPoint"))
  with pytest.raises(ValueError, match=r"no ptb.train.txt, .* \(needed by ptb_small\)"):
    rp.check_inputs(rp.selected(args), args)


def test_the_list_names_every_study_with_its_cost_and_last_commit(toy, capsys, monkeypatch):
  run, _ = toy
  run()
  capsys.readouterr()
  run("--list")
  rows = [r.split(" | ") for r in capsys.readouterr().out.splitlines()[2:]]
  assert [r[0].strip("| ") for r in rows] == ["toy", "slow", "card", "old"]
  assert rows[0][3] == "abc1234" and rows[1][2] == "days" and rows[2][3] == "not published"
  assert rows[3][3] == "def5678 (files not kept)"
  monkeypatch.setattr(rp.results, "commit", lambda *_: "fff0000")  # abc1234 is unknown here
  run("--list")
  rows = [r.split(" | ") for r in capsys.readouterr().out.splitlines()[2:]]
  assert rows[0][3] == "abc1234 (its code has changed since)"


def test_every_real_study_names_an_existing_page_and_command():
  root = rp.ROOT
  for s in rp.STUDIES:
    assert (root / s.page).is_file(), s.page
    script = next(a for a in s.argv if a.endswith((".py", ".sh")))
    assert (root / script).is_file(), script
    assert (s.quick is None) == (s.kind == "gpu"), s.name
