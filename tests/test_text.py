"""Any word-level corpus in PTB's layout (``dataset='text'``): reading and training."""

import numpy as np
import pytest

from lstmdrop_jax.data import load_text
from lstmdrop_jax.data.text import corpus_files, eval_stream
from lstmdrop_jax.run_folder import read_jsonl
from lstmdrop_jax.train import Config, train_and_evaluate
from tests.helpers import write_corpus


def test_corpus_layouts_and_their_errors(tmp_path):
  assert corpus_files(str(write_corpus(tmp_path / "plain"))) == {
    "train": "train.txt",
    "valid": "valid.txt",
    "test": "test.txt",
  }
  assert corpus_files(str(write_corpus(tmp_path / "prefixed", prefix="wiki.")))["valid"] == (
    "wiki.valid.txt"
  )
  two = write_corpus(tmp_path / "two", prefix="a.")
  write_corpus(two, prefix="b.")
  with pytest.raises(FileNotFoundError, match="complete prefixes found: several: a, b"):
    corpus_files(str(two))
  (tmp_path / "partial").mkdir()
  (tmp_path / "partial" / "train.txt").write_text("a b\n")
  with pytest.raises(FileNotFoundError, match=r"expected train\.txt, valid\.txt and test\.txt"):
    load_text("text", str(tmp_path / "partial"))
  with pytest.raises(FileNotFoundError, match="does not exist; pass --data-dir"):
    load_text("text", str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match=r"dataset 'text' needs --data-dir"):
    Config(dataset="text").validate()


def test_corpus_reads_like_ptb(tmp_path):
  folder = tmp_path / "c"
  folder.mkdir()
  (folder / "train.txt").write_text(" b a \n c a \n")
  (folder / "valid.txt").write_text(" c \n")
  (folder / "test.txt").write_text(" b b \n")
  corpus = load_text("text", str(folder))
  assert corpus.vocab == ("<eos>", "a", "b", "c")  # by count, ties by word
  np.testing.assert_array_equal(corpus.train, [2, 1, 0, 3, 1, 0])
  (folder / "test.txt").write_text(" b zebra \n")
  with pytest.raises(ValueError, match=r"test\.txt has 1 word\(s\) not in the training"):
    load_text("text", str(folder))


def test_eval_stream_predicts_every_token_once():
  tokens = np.arange(10, dtype=np.int32)
  s = eval_stream(tokens, 4)
  assert s["x"].shape == (3, 1, 4)
  np.testing.assert_array_equal(s["x"][s["mask"]], tokens[:-1])
  np.testing.assert_array_equal(s["y"][s["mask"]], tokens[1:])
  # Several streams (validation): contiguous rows, each token still predicted once.
  s = eval_stream(np.arange(23, dtype=np.int32), 4, streams=3)
  assert s["x"].shape == (2, 3, 4)  # [windows, streams, steps]: 22 predictions, 8 per row
  rows = [s["x"][:, b][s["mask"][:, b]] for b in range(3)]
  np.testing.assert_array_equal(np.concatenate(rows), np.arange(22))
  np.testing.assert_array_equal(s["y"][s["mask"]] - s["x"][s["mask"]], 1)


def test_a_corpus_written_here_trains_through_the_language_model_path(tmp_path):
  corpus = write_corpus(tmp_path / "corpus")
  cfg = Config(
    dataset="text", data_dir=str(corpus), hidden=16, layers=1, num_steps=10, batch_size=8,
    optimizer="adam", learning_rate=1e-2, epochs=3, unroll=1,
    dropout=Config().dropout.replace(input=0.1, embedding=0.1),
  )  # fmt: skip
  summary = train_and_evaluate(cfg, tmp_path / "run", progress=False)
  records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
  start = records[0]
  assert start["event"] == "start" and start["dataset"] == "text"
  assert start["vocab_size"] == 13  # 12 words and <eos>
  evals = [r for r in records if r.get("event") == "eval"]
  assert [e["epoch"] for e in evals] == [1, 2, 3]
  # Learned the grammar: far better than uniform over 13 words, and improving.
  assert evals[-1]["val/ppl"] < evals[0]["val/ppl"] < 13
  assert summary["final"]["test/ppl"] < 6
