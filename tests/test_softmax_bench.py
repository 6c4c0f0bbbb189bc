"""scripts/softmax_bench.py: the saved-softmax candidate computes the library's loss and
gradient; the driver alternates its candidates, writes its table and record, and refuses bad
options in one line. Times are printed, never asserted."""

import json

import jax
import numpy as np
import pytest

from lstmdrop_jax import steps
from tests.helpers import load_script

bench_models = load_script("scripts/bench_models.py")  # before the scripts that import it
bench = load_script("scripts/bench.py")
softmax_bench = load_script("scripts/softmax_bench.py")

TINY = dict(B=2, T=3, V=17, H=4, L=1, head="lm")
FAST = ["--warmup", "0", "--steps", "1", "--repeats", "1"]


@pytest.fixture
def tiny(monkeypatch):
  monkeypatch.setitem(bench_models.CONFIGS, "tiny_lm", TINY)
  return "tiny_lm"


def test_the_saved_softmax_has_the_librarys_loss_and_gradient():
  logits = jax.random.normal(jax.random.key(0), (6, 11)) * 3
  labels = jax.random.randint(jax.random.key(1), (6,), 0, 11)
  ours = lambda x: steps.lm_metrics(x, labels)["loss_sum"]
  saved = lambda x: softmax_bench.saved_softmax_nll(x, labels)
  np.testing.assert_allclose(saved(logits), ours(logits), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(saved)(logits), jax.grad(ours)(logits), atol=1e-6)


def test_every_candidate_runs_and_the_table_compares_it_with_torch(tiny, tmp_path, monkeypatch):
  calls = []

  def in_process(args, impl):
    calls.append(impl)
    job = {"impl": impl, "shape": softmax_bench.shapes(args.config)}
    return softmax_bench.measure({**job, **{k: getattr(args, k) for k in bench.TIMING}})

  monkeypatch.setattr(softmax_bench, "spawn", in_process)
  softmax_bench.main(["--config", tiny, "--rounds", "2", *FAST, "--out", str(tmp_path)])
  assert calls == list(softmax_bench.IMPLS) * 2  # alternating rounds
  record = json.loads((tmp_path / "softmax_cpu.json").read_text())
  assert record["shape"] == [6, 4, 17] and record["rounds"] == 2
  assert all(len(r["ms_rounds"]) == 2 for r in record["results"].values())
  rows = [ln for ln in (tmp_path / "softmax_cpu.md").read_text().splitlines() if "|" in ln]
  assert [r.split("|")[1].strip() for r in rows[2:]] == list(softmax_bench.IMPLS)
  assert "| torch |" in rows[2 + softmax_bench.IMPLS.index("torch")]
  assert rows[2 + softmax_bench.IMPLS.index("torch")].endswith("| 1.00x |")


def test_a_real_child_reports_its_time(tiny, capsys):
  args = softmax_bench.parse_args(["--config", tiny, *FAST])
  result = softmax_bench.spawn(args, "ours-saved")
  assert result["ms"] > 0
  assert "ours-saved:" in capsys.readouterr().err


def test_a_failed_candidate_fails_the_run(tiny, monkeypatch, capsys):
  fail_ours = lambda args, impl: None if impl == "ours" else {"ms": 1.0}
  monkeypatch.setattr(softmax_bench, "spawn", fail_ours)
  with pytest.raises(SystemExit) as e:
    softmax_bench.main(["--config", tiny, "--impls", "ours", "torch", *FAST])
  assert e.value.code == 1
  assert "| ours | failed |" in capsys.readouterr().out


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--config", "seed_clf"], "--config seed_clf has no softmax over a vocabulary"),
    (["--config", "nope"], "--config 'nope' is not one of"),
    (["--impls", "ours"], "--impls must include torch"),
    (["--rounds", "0"], "--rounds must be >= 1, got 0"),
  ],
)
def test_bad_options_are_refused_in_one_line(argv, message, capsys):
  with pytest.raises(SystemExit):
    softmax_bench.parse_args(argv)
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert message in err
