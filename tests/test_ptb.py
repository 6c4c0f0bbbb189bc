"""Tests for lstmdrop_jax.data.ptb on the shared Penn Treebank files."""

import itertools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lstmdrop_jax.data.ptb import MD5, bptt_batches, load_ptb, num_bptt_batches
from tests.helpers import PTB_DIR, ROOT, needs_ptb

GPU_PACK = ROOT / "experiments" / "gpu_ptb.sh"


@pytest.fixture(scope="module")
def ptb():
  return load_ptb(str(PTB_DIR))


@needs_ptb
def test_token_counts_and_vocab(ptb):
  assert (len(ptb.train), len(ptb.valid), len(ptb.test)) == (929_589, 73_760, 82_430)
  assert len(ptb.vocab) == ptb.vocab_size == 10_000
  assert len(set(ptb.vocab)) == 10_000
  for split in (ptb.train, ptb.valid, ptb.test):
    assert split.dtype == np.int32 and split.min() >= 0 and split.max() < 10_000
  # Descending count, ties by word, as the TF reader: "the" is the commonest word.
  assert ptb.vocab[0] == "the" and "<eos>" in ptb.vocab[:5] and "<unk>" in ptb.vocab
  counts = np.bincount(ptb.train, minlength=10_000)
  assert (np.diff(counts) <= 0).all()
  ties = np.flatnonzero(np.diff(counts) == 0)
  assert all(ptb.vocab[i] < ptb.vocab[i + 1] for i in ties)


@needs_ptb
def test_lines_end_with_eos(ptb):
  eos = ptb.vocab.index("<eos>")
  first_line = (PTB_DIR / "ptb.valid.txt").read_text().splitlines()[0].split()
  np.testing.assert_array_equal(
    ptb.valid[: len(first_line) + 1], [*(ptb.vocab.index(w) for w in first_line), eos]
  )
  assert ptb.train[-1] == eos
  lines = len((PTB_DIR / "ptb.test.txt").read_text().splitlines())
  assert (ptb.test == eos).sum() == lines


@needs_ptb
def test_md5_mismatch(tmp_path):
  for name in MD5:
    shutil.copy(PTB_DIR / name, tmp_path / name)
  target = tmp_path / "ptb.valid.txt"
  target.chmod(0o644)
  target.write_text(target.read_text().replace(" the ", " a ", 1))
  with pytest.raises(
    ValueError, match=rf"md5 mismatch for .*ptb\.valid\.txt: expected {MD5['ptb.valid.txt']}"
  ):
    load_ptb(str(tmp_path))
  assert len(load_ptb(str(tmp_path), check_md5=False).valid) == 73_760


def test_missing_file(tmp_path):
  (tmp_path / "ptb.train.txt").write_text("a b\n")
  with pytest.raises(FileNotFoundError, match=r"ptb\.valid\.txt not found in .*simple-examples"):
    load_ptb(str(tmp_path), check_md5=False)


def _write_ptb(folder, train: str, valid: str, test: str) -> str:
  """A corpus in PTB's file names under ``folder`` (its path)."""
  for split, text in (("train", train), ("valid", valid), ("test", test)):
    (folder / f"ptb.{split}.txt").write_text(text)
  return str(folder)


def test_unknown_word_in_valid(tmp_path):
  folder = _write_ptb(tmp_path, " a b a \n b c \n", " a zebra \n", " c \n")
  with pytest.raises(ValueError, match=r"ptb\.valid\.txt has 1 word\(s\) not in the training"):
    load_ptb(folder, check_md5=False)


def test_small_corpus_vocab_order(tmp_path):
  data = load_ptb(_write_ptb(tmp_path, " b a \n c a \n", " c \n", " b b \n"), check_md5=False)
  # counts: <eos> 2, a 2, b 1, c 1 -> ties broken by the word.
  assert data.vocab == ("<eos>", "a", "b", "c")
  np.testing.assert_array_equal(data.train, [2, 1, 0, 3, 1, 0])
  np.testing.assert_array_equal(data.test, [2, 2, 0])


@pytest.mark.parametrize(("batch_size", "num_steps"), [(20, 35), (3, 4), (1, 7)])
def test_bptt_batches_follow_ptb_iterator(batch_size, num_steps):
  tokens = np.arange(1_003, dtype=np.int32)
  batches = list(bptt_batches(tokens, batch_size, num_steps))
  stream_len = len(tokens) // batch_size
  epoch_size = (stream_len - 1) // num_steps  # Zaremba's formula
  assert len(batches) == epoch_size == num_bptt_batches(len(tokens), batch_size, num_steps)
  data = tokens[: batch_size * stream_len].reshape(batch_size, stream_len)
  for i, (x, y) in enumerate(batches):
    assert x.shape == y.shape == (batch_size, num_steps)
    assert x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(x, data[:, i * num_steps : (i + 1) * num_steps])
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])  # y is x shifted by one
  for (x0, y0), (x1, _) in itertools.pairwise(batches):
    np.testing.assert_array_equal(x1[:, 0], x0[:, -1] + 1)  # each stream continues
    np.testing.assert_array_equal(x1[:, 0], y0[:, -1])


@needs_ptb
def test_bptt_on_ptb(ptb):
  # Zaremba's small/medium configs: batch 20, 35 steps -> 1327 batches per epoch.
  assert num_bptt_batches(len(ptb.train), 20, 35) == 1327
  x, y = next(bptt_batches(ptb.train, 20, 35))
  stream_len = len(ptb.train) // 20
  np.testing.assert_array_equal(x[:, 0], ptb.train[: 20 * stream_len : stream_len])
  np.testing.assert_array_equal(y[0], ptb.train[1:36])


def test_bptt_errors():
  with pytest.raises(ValueError, match="too few for one batch"):
    bptt_batches(np.arange(20), 4, 5)
  assert len(list(bptt_batches(np.arange(24), 4, 5))) == 1
  with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
    bptt_batches(np.arange(100), 4, 0)
  with pytest.raises(ValueError, match="1-D integer array"):
    bptt_batches(np.zeros((4, 5), np.int32), 2, 2)
  assert num_bptt_batches(20, 4, 5) == 0


@needs_ptb
def test_the_gpu_pack_runs_end_to_end_on_a_cpu(tmp_path):
  """``QUICK=1 CONFIGS=medium EPOCHS=1 bash experiments/gpu_ptb.sh``: the medium group (six
  runs, mixed time-locking, one compiled step), 2x32 units, one short epoch; tables and
  summaries kept. (Large on its own is the same code path with one run.)"""
  env = {**os.environ, "QUICK": "1", "CONFIGS": "medium", "EPOCHS": "1"}
  env.update(JAX_PLATFORMS="cpu", PYTHON=sys.executable)
  env.update(OUT=str(tmp_path / "out"), PTB_DIR=str(PTB_DIR), LSTMDROP_CPU_DEVICES="1")
  proc = subprocess.run(["bash", str(GPU_PACK)], env=env, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
  out = tmp_path / "out"
  assert sorted(p.name for p in out.iterdir()) == [
    "log.txt", "nvidia-smi.txt", "ptb_variants_quick_1ep.csv", "ptb_variants_quick_1ep.md",
    "summaries.json",
  ]  # fmt: skip
  runs = json.loads((out / "summaries.json").read_text())
  names = ["medium", "medium_no_input", "medium_no_between", "medium_no_output"]
  names += ["medium_locked", "medium_variational"]
  assert sorted(runs) == sorted(f"{n}_quick_1ep" for n in names)
  for run in runs.values():
    assert run["status"] == "finished" and run["final"]["test/ppl"] > 1
  table = (out / "ptb_variants_quick_1ep.md").read_text()
  assert "recurrent 0.2, embedding 0.2 locked" in table and "81.9" in table
  # Different dropout gives different models: the group did not train one run six times.
  assert len({round(r["final"]["val/ppl"], 6) for r in runs.values()}) == len(runs)


@needs_ptb
def test_the_gpu_pack_refuses_a_part_the_budget_cannot_hold(tmp_path):
  env = {**os.environ, "BUDGET": "100", "CONFIGS": "large", "PYTHON": sys.executable}
  env.update(OUT=str(tmp_path / "out"), PTB_DIR=str(PTB_DIR), JAX_PLATFORMS="cpu")
  proc = subprocess.run(["bash", str(GPU_PACK)], env=env, capture_output=True, text=True)
  assert proc.returncode == 3
  assert "not started: large needs about 350 s and" in proc.stderr
  assert "CONFIGS=large bash experiments/gpu_ptb.sh" in proc.stderr
  assert not list((tmp_path / "out").glob("ptb_*"))  # nothing trained


def test_the_gpu_pack_names_a_bad_part_or_budget(tmp_path):
  for var, value, message in [
    ("CONFIGS", "medium huge", "error: CONFIGS has 'huge'; the parts are medium, large and gal"),
    ("BUDGET", "ten", "error: BUDGET=ten is not a number of seconds"),
    ("MC_SAMPLES", "many", "error: MC_SAMPLES=many is not a number of passes (>= 1)"),
  ]:
    env = {**os.environ, var: value, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(GPU_PACK)], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == message
    assert not (tmp_path / "out").exists()  # refused before anything is written
