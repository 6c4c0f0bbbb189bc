"""Word-level text corpora for language modelling, and truncated-BPTT batches.

A corpus is a folder of three plain-text files, one per split (train,
valid, test), with whitespace-separated words and one sentence per line:
either ``train.txt``, ``valid.txt``, ``test.txt``, or the same names behind
one common prefix (``ptb.train.txt``, ...). Reading follows the TensorFlow
PTB tutorial used by Zaremba et al. (2014) (``tensorflow/models``,
``tutorials/rnn/ptb/reader.py``), so perplexities are comparable with the
paper:

* each line's words, then ``<eos>`` (the tutorial's ``replace("\\n", "<eos>")``);
* the vocabulary comes from the training split only, sorted by descending
  count, ties by word;
* ``bptt_batches`` is the tutorial's ``ptb_iterator``: the token stream is cut
  into ``batch_size`` contiguous streams and walked ``num_steps`` at a time,
  so consecutive batches continue each stream and the model carries its
  state across them.

The vocabulary is closed: a validation or test word that never occurs in
the training split is an error (preprocess rare words to ``<unk>``, as the
Penn Treebank files are), never dropped in silence, which would change the
perplexity. Nothing is ever downloaded.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import numbers
import os
from collections.abc import Iterator, Mapping

import numpy as np

SPLITS = ("train", "valid", "test")
EOS = "<eos>"


@dataclasses.dataclass(frozen=True)
class Corpus:
  """The three token streams and the vocabulary.

  Attributes:
    train, valid, test: ``[n]`` int32 token ids, one stream per split.
    vocab: ``vocab[i]`` is the word of id ``i``.
  """

  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray
  vocab: tuple[str, ...]

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)


def corpus_files(folder: str) -> dict[str, str]:
  """The split files of a corpus folder: ``{split: filename}``.

  Raises:
    FileNotFoundError: the folder is missing, or holds neither
      ``{train,valid,test}.txt`` nor one prefix of ``*.{train,valid,test}.txt``.
  """
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"text corpus folder {folder!r} does not exist; pass --data-dir")
  plain = {s: f"{s}.txt" for s in SPLITS}
  if all(os.path.isfile(os.path.join(folder, f)) for f in plain.values()):
    return plain
  prefixes = {
    name[: -len(".train.txt")] for name in os.listdir(folder) if name.endswith(".train.txt")
  }
  complete = sorted(
    p for p in prefixes if all(os.path.isfile(os.path.join(folder, f"{p}.{s}.txt")) for s in SPLITS)
  )
  if len(complete) == 1:
    return {s: f"{complete[0]}.{s}.txt" for s in SPLITS}
  found = "several: " + ", ".join(complete) if complete else "none"
  raise FileNotFoundError(
    f"{folder!r} is not a text corpus folder: expected train.txt, valid.txt and test.txt, "
    f"or one prefix of <prefix>.train.txt/.valid.txt/.test.txt (complete prefixes found: "
    f"{found})"
  )


def read_words(path: str, expected_md5: str | None = None) -> list[str]:
  """The words of a file, ``<eos>`` after each line; checks the md5 sum if given."""
  with open(path, "rb") as f:
    raw = f.read()
  if expected_md5 is not None:
    actual = hashlib.md5(raw).hexdigest()
    if actual != expected_md5:
      raise ValueError(
        f"md5 mismatch for {path}: expected {expected_md5}, got {actual}; the file is not the "
        f"standard {os.path.basename(path)} (pass check_md5=False to use it anyway)"
      )
  words = []
  for line in raw.decode("utf-8").splitlines():
    words.extend(line.split())
    words.append(EOS)
  return words


def build_vocab(words: list[str]) -> tuple[str, ...]:
  """Words sorted by descending count, ties by word (as the TF reader does)."""
  counts = collections.Counter(words)
  return tuple(w for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])))


def load_corpus(
  folder: str,
  *,
  files: Mapping[str, str] | None = None,
  md5: Mapping[str, str] | None = None,
  missing_hint: str = "",
) -> Corpus:
  """Reads and tokenises a corpus folder.

  Args:
    folder: the corpus folder.
    files: ``{split: filename}``; default ``corpus_files(folder)``.
    md5: ``{filename: md5}`` to check, or None.
    missing_hint: appended to the message of a missing file.

  Raises:
    FileNotFoundError: a split file is missing.
    ValueError: an md5 mismatch, or a valid/test word outside the vocabulary.
  """
  folder = os.path.expanduser(os.fspath(folder))
  files = dict(files or corpus_files(folder))
  words = {}
  for split in SPLITS:
    path = os.path.join(folder, files[split])
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{files[split]} not found in {folder!r}{missing_hint}")
    words[split] = read_words(path, None if md5 is None else md5[files[split]])
  vocab = build_vocab(words["train"])
  ids = {w: i for i, w in enumerate(vocab)}
  streams = {}
  for split, ws in words.items():
    unknown = sorted({w for w in ws if w not in ids})
    if unknown:
      raise ValueError(
        f"{files[split]} has {len(unknown)} word(s) not in the training vocabulary, "
        f"e.g. {unknown[:5]}; map rare words to <unk> in every split first (as the Penn "
        "Treebank files do)"
      )
    streams[split] = np.array([ids[w] for w in ws], np.int32)
  return Corpus(**streams, vocab=vocab)


def _check_positive(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ValueError(f"{name} must be an int >= 1, got {value!r}")
  return int(value)


def num_bptt_batches(n_tokens: int, batch_size: int, num_steps: int) -> int:
  """Batches per epoch: ``(n_tokens // batch_size - 1) // num_steps`` (may be 0)."""
  batch_size = _check_positive("batch_size", batch_size)
  num_steps = _check_positive("num_steps", num_steps)
  if isinstance(n_tokens, bool) or not isinstance(n_tokens, numbers.Integral) or n_tokens < 0:
    raise ValueError(f"n_tokens must be an int >= 0, got {n_tokens!r}")
  return max(0, (int(n_tokens) // batch_size - 1) // num_steps)


def bptt_batches(
  tokens: np.ndarray, batch_size: int, num_steps: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Truncated-BPTT batches over one token stream (Zaremba's ``ptb_iterator``).

  The ``n`` tokens are cut into ``batch_size`` contiguous streams of
  ``n // batch_size`` tokens (the tail is dropped); batch ``i`` is
  ``x = data[:, i*num_steps:(i+1)*num_steps]`` and ``y`` the same window one
  token later. Row ``b`` of batch ``i + 1`` continues row ``b`` of batch ``i``.

  Args:
    tokens: ``[n]`` integer token ids.
    batch_size: streams per batch.
    num_steps: unrolled time steps per batch.

  Yields:
    ``(x, y)``, each ``[batch_size, num_steps]`` int32;
    ``num_bptt_batches(n, batch_size, num_steps)`` of them.

  Raises:
    ValueError: bad arguments, or too few tokens for one batch.
  """
  tokens = np.asarray(tokens)
  if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
    raise ValueError(
      f"tokens must be a 1-D integer array, got shape {tokens.shape} dtype {tokens.dtype}"
    )
  epoch_size = num_bptt_batches(len(tokens), batch_size, num_steps)
  if epoch_size == 0:
    raise ValueError(
      f"{len(tokens)} tokens are too few for one batch of batch_size={batch_size} x "
      f"num_steps={num_steps} (needs at least {batch_size * (num_steps + 1)} tokens); "
      "decrease batch_size or num_steps"
    )
  stream_len = len(tokens) // batch_size
  data_BL = tokens[: batch_size * stream_len].astype(np.int32).reshape(batch_size, stream_len)

  def batches():
    for i in range(epoch_size):
      s = i * num_steps
      x_BS = np.ascontiguousarray(data_BL[:, s : s + num_steps])
      y_BS = np.ascontiguousarray(data_BL[:, s + 1 : s + num_steps + 1])
      yield x_BS, y_BS

  return batches()


def eval_stream(tokens: np.ndarray, num_steps: int, streams: int = 1) -> dict[str, np.ndarray]:
  """A whole split as ``streams`` contiguous streams of ``num_steps`` windows: every
  token but the first is predicted once, each stream's tail padded and masked.

  One stream (batch 1) is Zaremba et al.'s test; their validation runs the
  training batch's number of streams, each from a zero state, which costs the
  same arithmetic in a ``streams``-th of the sequential steps.
  Returns ``{'x', 'y': [windows, streams, num_steps] int32, 'mask': bool}``.
  """
  streams = _check_positive("streams", streams)
  n = len(tokens) - 1
  per = -(-n // streams)  # predictions per stream
  windows = -(-per // num_steps)
  x, y = (np.zeros((streams, windows * num_steps), np.int32) for _ in range(2))
  mask = np.zeros((streams, windows * num_steps), bool)
  for b in range(streams):
    start, stop = min(n, b * per), min(n, (b + 1) * per)
    x[b, : stop - start] = tokens[start:stop]
    y[b, : stop - start] = tokens[start + 1 : stop + 1]
    mask[b, : stop - start] = True
  as_windows = lambda a: a.reshape(streams, windows, num_steps).swapaxes(0, 1)
  return {"x": as_windows(x), "y": as_windows(y), "mask": as_windows(mask)}
