"""A researcher's workflow: own arrays in, predictions and exports out, continued runs,
config files, schedules, early stopping on a chosen metric, and the console."""

import csv
import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from lstmdrop_jax import optim
from lstmdrop_jax.cli import main
from lstmdrop_jax.data import ArrayData
from lstmdrop_jax.predict import load_run, predict_main
from lstmdrop_jax.run_folder import read_jsonl
from lstmdrop_jax.train import Config, train_and_evaluate
from tests.helpers import ROOT

FAST = Config(hidden=8, layers=1, epochs=3, batch_size=8, learning_rate=1e-2, unroll=1)


def _arrays(n=48, T=20, seed=0, ragged=False):
  """Two classes of raw series (offset 10, scale 5) told apart by their first steps."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, T, 2)).astype(np.float32)
  y = np.where(np.arange(n) % 2 == 0, "calm", "rising")
  x[y == "rising", :5, 0] += 2.0
  lengths = rng.integers(8, T + 1, n) if ragged else None
  if ragged:
    x[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
  return 10 + 5 * x, y, lengths


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
  """A run on arrays with variable lengths, string labels and an explicit test split."""
  x, y, lengths = _arrays(ragged=True)
  xt, yt, lt = _arrays(n=20, seed=1, ragged=True)
  data = ArrayData(x, y, lengths, x_test=xt, y_test=yt, lengths_test=lt)
  workdir = tmp_path_factory.mktemp("own") / "run"
  cfg = dataclasses.replace(
    FAST, dataset="mine", epochs=4, dropout=FAST.dropout.replace(output=0.3)
  )
  summary = train_and_evaluate(cfg, workdir, data=data, progress=False)
  return workdir, cfg, data, summary


# --- own data --------------------------------------------------------------------


def test_own_arrays_train_and_the_normalisation_is_saved(own_run):
  workdir, _, data, summary = own_run
  assert summary["status"] == "finished" and "test/accuracy" in summary["best"]
  described = json.loads((workdir / "data.json").read_text())
  assert described["classes"] == ["calm", "rising"]
  assert described["n_train"] + described["n_val"] == 48 and described["n_test"] == 20
  # The statistics of the training split's valid steps (after holding out val).
  run = load_run(workdir)
  assert run.normalizer is not None and len(run.normalizer.mean) == 2
  assert 8 < run.normalizer.mean[1] < 12 and 4 < run.normalizer.std[1] < 6
  assert described["fingerprint"] == data.fingerprint()


def test_resuming_with_other_arrays_is_refused(own_run, tmp_path):
  workdir, cfg, data, _ = own_run
  other = ArrayData(data.x * 2, data.y, data.lengths, x_test=data.x_test, y_test=data.y_test,
                    lengths_test=data.lengths_test)  # fmt: skip
  with pytest.raises(ValueError, match=r"was trained on other data: its normalizer, fingerprint"):
    train_and_evaluate(dataclasses.replace(cfg, epochs=6), workdir, data=other, progress=False)


def test_an_npz_file_trains_from_the_command_line_without_a_test_split(tmp_path, capsys):
  x, y, _ = _arrays()
  xv, yv, _ = _arrays(n=16, seed=2)
  np.savez(tmp_path / "d.npz", x=x[..., 0], y=y, x_val=xv[..., 0], y_val=yv)  # one channel
  workdir = tmp_path / "run"
  main(["--workdir", str(workdir), "--dataset", str(tmp_path / "d.npz"), "--hidden", "8",
        "--layers", "1", "--epochs", "2", "--batch-size", "8", "--unroll", "1"])  # fmt: skip
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["best"]["val/count"] == 16  # the explicit validation split
  assert "test/accuracy" not in summary["best"]
  from lstmdrop_jax import report

  paths = report.build_report(workdir.parent, tmp_path / "report")
  assert "n/a" in paths["md"].read_text()  # no test score
  np.savez(tmp_path / "bad.npz", x=x, y=y, z=y)
  with pytest.raises(SystemExit):
    main(["--workdir", str(tmp_path / "bad"), "--dataset", str(tmp_path / "bad.npz")])
  assert "unknown keys ['z']" in capsys.readouterr().err


def test_aeon_layout_is_transposed_or_refused_with_the_fix(tmp_path, capsys):
  """aeon's [N, channels, time]: layout NCT gives the same data; as NTF it is refused."""
  x, y, _ = _arrays(n=24, T=12)
  x_nct = x.transpose(0, 2, 1)  # [N, 2, 12]
  a, b = ArrayData(x, y), ArrayData(x_nct, y, layout="NCT")
  np.testing.assert_array_equal(a.x, b.x)
  assert a.fingerprint() == b.fingerprint()
  univariate = x_nct[:, :1]  # [N, 1, 12]: one channel, as aeon gives GunPoint
  with pytest.raises(ValueError, match=r"series of one time step .* layout='NCT'"):
    ArrayData(univariate, y)
  assert ArrayData(univariate, y, layout="NCT").x.shape == (24, 12, 1)
  np.savez(tmp_path / "aeon.npz", x=univariate, y=y)
  flags = ["--dataset", str(tmp_path / "aeon.npz"), "--hidden", "4", "--layers", "1",
           "--epochs", "1", "--batch-size", "8", "--unroll", "1"]  # fmt: skip
  with pytest.raises(SystemExit):
    main(["--workdir", str(tmp_path / "ntf"), *flags])
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "aeon.npz: x holds series of one time step" in err
  assert "--layout NCT" in err and not (tmp_path / "ntf").exists()
  summary = main(["--workdir", str(tmp_path / "nct"), *flags, "--layout", "NCT"])
  assert json.loads((tmp_path / "nct" / "data.json").read_text())["length"] == 12
  assert summary["status"] == "finished"
  with pytest.raises(SystemExit):
    main(["--workdir", str(tmp_path / "gp"), "--dataset", "GunPoint", "--layout", "NCT"])
  assert "'GunPoint' is read by the library, which knows its layout" in capsys.readouterr().err


def test_wrong_files_and_one_class_labels_get_one_line_naming_the_file(tmp_path, capsys):
  x, _, _ = _arrays(n=24, T=12)
  (tmp_path / "notes.npz").write_text("not an archive")
  with open(tmp_path / "array.npz", "wb") as f:
    np.save(f, x)  # .npy contents under an .npz name
  (tmp_path / "config.bin").write_bytes(bytes(range(256)))
  np.savez(tmp_path / "one.npz", x=x, y=np.full(24, "calm"))
  cases = {
    "notes.npz": ["--dataset", str(tmp_path / "notes.npz")],
    "array.npz": ["--dataset", str(tmp_path / "array.npz")],
    "config.bin": ["--config", str(tmp_path / "config.bin")],
    "one.npz": ["--dataset", str(tmp_path / "one.npz")],
  }
  want = {
    "notes.npz": "notes.npz: not an .npz file of numpy arrays; write one with np.savez",
    "array.npz": "array.npz: not an .npz file of numpy arrays",
    "config.bin": "config.bin: not a text file; expected a JSON object of config fields",
    "one.npz": "one.npz: y holds one class ('calm': 24 series); a classifier needs labels",
  }
  for name, flags in cases.items():
    with pytest.raises(SystemExit):
      main(["--workdir", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and want[name] in err, err
  assert not (tmp_path / "run").exists()  # nothing written by a failed start


def test_a_folder_that_never_trained_takes_a_new_config(tmp_path, capsys, monkeypatch):
  """A start that fails after writing config.json (here: compiling) leaves a stub; once
  the cause is fixed, the same folder takes the new command, with a note."""
  from lstmdrop_jax.train.group import Group

  cfg = dataclasses.replace(FAST, dataset="synthetic", epochs=1)

  def fail(*args, **kwargs):
    raise ValueError("compilation failed")

  with monkeypatch.context() as m:
    m.setattr(Group, "compile", fail)
    with pytest.raises(ValueError, match="compilation failed"):
      train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json"]
  fixed = dataclasses.replace(cfg, hidden=6)
  summary = train_and_evaluate(fixed, tmp_path / "run", progress=False)
  assert summary["status"] == "finished"
  assert json.loads((tmp_path / "run" / "config.json").read_text())["hidden"] == 6
  assert "held a run that never trained" in capsys.readouterr().err
  # A folder that trained an epoch is a run: another config is still refused.
  with pytest.raises(ValueError, match=r"different config \(hidden: 6 -> 7\)"):
    train_and_evaluate(dataclasses.replace(cfg, hidden=7), tmp_path / "run", progress=False)


def test_monte_carlo_dropout_needs_dropout(tmp_path):
  x, y, _ = _arrays(n=24, T=12)
  workdir = tmp_path / "plain"
  train_and_evaluate(dataclasses.replace(FAST, dataset="plain", epochs=1), workdir,
                     data=ArrayData(x, y), progress=False)  # fmt: skip
  with pytest.raises(ValueError, match="no dropout: the spread would be zero by construction"):
    load_run(workdir).predict_proba(x, mc_samples=5)


# --- predict, load, export ---------------------------------------------------------


def test_load_run_predicts_what_the_model_computes(own_run):
  workdir, _, data, _ = own_run
  run = load_run(workdir, "best")
  p = run.predict_proba(data.x_test, data.lengths_test)
  assert p.shape == (20, 2)
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
  x = run.normalizer(data.x_test, data.lengths_test)
  logit = run.model.apply(run.variables, x, lengths=data.lengths_test)
  np.testing.assert_allclose(p[:, 1], jax.nn.sigmoid(logit), rtol=1e-6)
  mean, std = run.predict_proba(data.x_test, data.lengths_test, mc_samples=20)
  assert mean.shape == std.shape == (20, 2) and (std > 0).any()  # output dropout 0.3
  assert not np.allclose(mean, p)


def test_mc_predictions_are_the_mean_and_spread_of_passes_with_their_documented_keys(own_run):
  """Batch ``i`` (from series ``i``) draws pass ``s``'s masks from
  ``split(key(seed + i), K)[s]``; the mean and standard deviation are over the K passes."""
  workdir, _, data, _ = own_run
  run = load_run(workdir, "best")
  K, seed, n = 5, 3, 8
  mean, std = run.predict_proba(
    data.x_test, data.lengths_test, mc_samples=K, seed=seed, batch_size=n
  )
  x = run.normalizer(data.x_test, data.lengths_test)
  passes = []  # [K, N] of p(class 1)
  for s in range(K):
    batches = []
    for i in range(0, len(x), n):
      k = jax.random.split(jax.random.key(seed + i), K)[s]
      logit = run.model.apply(run.variables, x[i : i + n], lengths=data.lengths_test[i : i + n],
                              train=True, rngs={"dropout": k})  # fmt: skip
      batches.append(np.asarray(jax.nn.sigmoid(logit), np.float64))
    passes.append(np.concatenate(batches))
  passes = np.asarray(passes)
  np.testing.assert_allclose(mean[:, 1], passes.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(std[:, 1], passes.std(0), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(std[:, 0], std[:, 1], atol=1e-6)
  assert (passes.std(0) > 1e-3).mean() > 0.5  # the passes differ


def test_predict_writes_probabilities_and_scores_labels(own_run, tmp_path):
  workdir, _, data, _ = own_run
  np.savez(tmp_path / "new.npz", x=data.x_test, lengths=data.lengths_test, y=data.y_test)
  out = tmp_path / "preds.csv"
  report = predict_main(["--workdir", str(workdir), "--input", str(tmp_path / "new.npz"),
                         "--out", str(out), "--mc-samples", "8"])  # fmt: skip
  rows = list(csv.DictReader(out.read_text().splitlines()))
  assert len(rows) == 20 and list(rows[0]) == [
    "index", "predicted", "label", "p_calm_mean", "p_calm_std", "p_rising_mean", "p_rising_std",
  ]  # fmt: skip
  agree = np.mean([r["predicted"] == r["label"] for r in rows])
  assert report["accuracy"] == pytest.approx(agree)


def test_predict_on_a_ucr_name_scales_its_raw_test_split(tmp_path):
  cfg = dataclasses.replace(FAST, dataset="GunPoint", epochs=1, batch_size=7)
  train_and_evaluate(cfg, tmp_path / "gp", progress=False)
  out = tmp_path / "gp.csv"
  report = predict_main(
    ["--workdir", str(tmp_path / "gp"), "--input", "GunPoint", "--out", str(out)]
  )
  assert report["series"] == 150  # GunPoint's official test split
  summary = json.loads((tmp_path / "gp" / "summary.json").read_text())
  assert summary["best"]["epoch"] == 1
  assert report["accuracy"] == pytest.approx(summary["best"]["test/accuracy"], abs=1e-6)


def test_export_to_pytorch_gives_the_same_predictions(tmp_path):
  import torch  # a test dependency (the dev extra)

  from lstmdrop_jax.convert import to_torch_classifier

  x, y, _ = _arrays()
  cfg = dataclasses.replace(FAST, dataset="mine", layers=2, epochs=2)
  train_and_evaluate(cfg, tmp_path / "run", data=ArrayData(x, y), progress=False)
  run = load_run(tmp_path / "run")

  class Classifier(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.lstm = torch.nn.LSTM(2, 8, 2, batch_first=True)
      self.head = torch.nn.Linear(8, 1)

    def forward(self, x):
      out, _ = self.lstm(x)
      return self.head(out[:, -1])[:, 0]

  model = Classifier()
  state = to_torch_classifier(run.variables["params"], num_features=2)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
  xn = run.normalizer(x)
  with torch.no_grad():
    theirs = torch.sigmoid(model(torch.from_numpy(xn))).numpy()
  np.testing.assert_allclose(theirs, run.predict_proba(x)[:, 1], atol=2e-6)
  # The command line's export: a state dict that loads into the same module.
  np.savez(tmp_path / "x.npz", x=x)
  exported = tmp_path / "model.pt"
  predict_main(["--workdir", str(tmp_path / "run"), "--input", str(tmp_path / "x.npz"),
                "--out", str(tmp_path / "p.csv"), "--export-torch", str(exported)])  # fmt: skip
  again = Classifier()
  again.load_state_dict(torch.load(exported))
  with torch.no_grad():
    np.testing.assert_array_equal(torch.sigmoid(again(torch.from_numpy(xn))).numpy(), theirs)


# --- continue training, config files ------------------------------------------------


def test_extending_a_finished_run_equals_the_longer_run(tmp_path, same_folder):
  from tests.conftest import SMALL_RUN

  short = dataclasses.replace(SMALL_RUN, epochs=2)
  train_and_evaluate(short, tmp_path / "extended", progress=False)
  train_and_evaluate(SMALL_RUN, tmp_path / "extended", progress=False)  # 2 -> 4 epochs
  train_and_evaluate(SMALL_RUN, tmp_path / "straight", progress=False)
  same_folder(tmp_path / "extended", tmp_path / "straight")


def test_a_larger_patience_continues_an_early_stopped_run(tmp_path):
  cfg = dataclasses.replace(FAST, dataset="synthetic", epochs=12, early_stopping=1)
  first = train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert first["status"] == "early_stopped" and first["epochs"] < 12
  second = train_and_evaluate(dataclasses.replace(cfg, early_stopping=50), tmp_path / "run")
  assert second["status"] == "finished" and second["epochs"] == 12


def test_early_stopping_stops_at_an_evaluation(tmp_path):
  """Patience shorter than the evaluation interval: the run stops at the first evaluation
  after it runs out, so its final record and its last checkpoint are the same epoch."""
  cfg = dataclasses.replace(FAST, dataset="synthetic", epochs=12, eval_every=4, early_stopping=1)
  summary = train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert summary["status"] == "early_stopped", summary["status"]
  assert summary["epochs"] % 4 == 0 and summary["final"]["epoch"] == summary["epochs"]


def test_what_may_change_in_a_run_folder(tmp_path, capsys):
  cfg = dataclasses.replace(FAST, dataset="synthetic", epochs=2, schedule="cosine")
  train_and_evaluate(cfg, tmp_path / "run", progress=False)
  with pytest.raises(ValueError, match="schedule 'cosine', which spans the run's 2 epochs"):
    train_and_evaluate(dataclasses.replace(cfg, epochs=4), tmp_path / "run", progress=False)
  with pytest.raises(ValueError, match=r"different config \(hidden: 8 -> 9\)"):
    train_and_evaluate(dataclasses.replace(cfg, hidden=9), tmp_path / "run", progress=False)


def test_a_config_file_runs_and_flags_override_it(tmp_path, capsys):
  cfg = dataclasses.replace(FAST, dataset="synthetic", epochs=2)
  train_and_evaluate(cfg, tmp_path / "run", progress=False)
  again = main(
    ["--workdir", str(tmp_path / "run"), "--config", str(tmp_path / "run" / "config.json")]
  )
  assert again["epochs"] == 2  # read back, not retrained
  more = main(["--config", str(tmp_path / "run" / "config.json"), "--workdir",
               str(tmp_path / "run"), "--epochs", "3"])  # fmt: skip
  assert more["epochs"] == 3  # extended by the flag
  (tmp_path / "bad.json").write_text('{"hidden": 8, "colour": "red"}')
  with pytest.raises(SystemExit):
    main(["--workdir", str(tmp_path / "x"), "--config", str(tmp_path / "bad.json")])
  assert "unknown config fields ['colour']" in capsys.readouterr().err


# --- schedules and stopping ---------------------------------------------------------


def test_warmup_cosine_is_the_learning_rate_of_the_log(tmp_path):
  cfg = dataclasses.replace(FAST, dataset="synthetic", epochs=4, schedule="warmup_cosine",
                            warmup_epochs=1, learning_rate=0.01)  # fmt: skip
  train_and_evaluate(cfg, tmp_path / "run", progress=False)
  lrs = [r["lr"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "lr" in r]
  spe = 70 // 8 + 1
  assert lrs == pytest.approx([optim.lr_of_epoch(cfg, e, spe) for e in (1, 2, 3, 4)])
  assert lrs[0] == 0.0 and lrs[1] == pytest.approx(0.01) and lrs[3] < lrs[2] < lrs[1]


def test_a_plateau_schedule_divides_the_logged_rate_when_validation_stalls(tmp_path):
  cfg = dataclasses.replace(FAST, dataset="synthetic", epochs=8, schedule="plateau",
                            lr_decay=4.0, learning_rate=0.03)  # fmt: skip
  train_and_evaluate(cfg, tmp_path / "run", progress=False)
  log = read_jsonl(tmp_path / "run" / "metrics.jsonl")
  lrs = [r["lr"] for r in log if "lr" in r]
  rate, best, want = 0.03, np.inf, []
  for r in (r for r in log if r.get("event") == "eval"):
    want.append(rate)  # the rate an epoch trains with, then its validation decides
    if r["val/loss"] < (1 - 1e-4) * best:
      best = r["val/loss"]
    else:
      rate /= 4.0
  assert lrs == pytest.approx(want, rel=1e-6)
  assert lrs[-1] < 0.03  # the run saw a plateau


def test_the_best_checkpoint_follows_the_chosen_metric(tmp_path):
  cfg = dataclasses.replace(FAST, dataset="synthetic", epochs=5, best_metric="val_loss")
  summary = train_and_evaluate(cfg, tmp_path / "run", progress=False)
  evals = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("event") == "eval"]
  assert summary["best"]["epoch"] == min(evals, key=lambda r: r["val/loss"])["epoch"]


# --- the console --------------------------------------------------------------------


def test_redirected_progress_is_throttled_and_ends_with_the_run_folder(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  with open(tmp_path / "err.txt", "w") as err:
    proc = subprocess.run(
      [sys.executable, "-m", "lstmdrop_jax.train", "--workdir", str(tmp_path / "run"),
       "--dataset", "synthetic", "--hidden", "8", "--layers", "1", "--epochs", "12",
       "--unroll", "1", "--mc-samples", "4", "--dropout.output", "0.3"],
      stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
  assert proc.returncode == 0
  lines = (tmp_path / "err.txt").read_text().splitlines()
  progress = [ln for ln in lines if ": epoch " in ln]
  # The first epoch, then at most one a 10 s, and the last: a 12-epoch run takes under 30 s.
  assert 2 <= len(progress) <= 4, lines
  assert "epoch 1/12, train loss" in progress[0] and "best val acc" in progress[0]
  assert "epoch 12/12, train loss" in progress[-1]
  assert "\r" not in (tmp_path / "err.txt").read_text()  # no bar redrawn into the file
  printed = json.loads(proc.stdout)
  best, final = printed["best"]["epoch"], printed["final"]["epoch"]
  assert (
    lines[-1] == f"{tmp_path / 'run'}: finished, final epoch {final}, best epoch {best} "
    f"(val acc {printed['best']['val/accuracy']:.3f})"
  )
  assert printed["workdir"] == str(tmp_path / "run") and final == 12
  assert printed["mc"]["samples"] == 4 and "val/accuracy" in printed["mc"]
