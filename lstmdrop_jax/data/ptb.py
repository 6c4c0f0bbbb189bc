"""Penn Treebank word-level language modelling (Mikolov's preprocessed split).

The reader follows the TensorFlow PTB tutorial used by Zaremba et al. (2014)
(``tensorflow/models``, ``tutorials/rnn/ptb/reader.py``), so perplexities are
comparable with the paper:

* each line's words, then ``<eos>`` (the tutorial's ``replace("\\n", "<eos>")``);
* the vocabulary comes from the training split only, sorted by descending
  count, ties by word (10,000 words for the standard files);
* ``bptt_batches`` is the tutorial's ``ptb_iterator``: the token stream is cut
  into ``batch_size`` contiguous streams and walked ``num_steps`` at a time,
  so consecutive batches continue each stream and the model carries its
  state across them.

The files are never downloaded: point ``load_ptb`` at a folder holding
``ptb.train.txt``, ``ptb.valid.txt`` and ``ptb.test.txt`` (the ``data/``
folder of Mikolov's ``simple-examples`` archive). Their md5 sums are checked.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import numbers
import os
from collections.abc import Iterator

import numpy as np

SPLITS = ("train", "valid", "test")
MD5 = {
  "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
  "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
  "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
}
EOS = "<eos>"


@dataclasses.dataclass(frozen=True)
class PTB:
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


def _read(folder: str, filename: str, check_md5: bool) -> list[str]:
  path = os.path.join(folder, filename)
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"{filename} not found in {folder!r}: expected the three files "
      f"{', '.join(MD5)} of Mikolov's simple-examples/data (Penn Treebank)"
    )
  with open(path, "rb") as f:
    raw = f.read()
  if check_md5:
    actual = hashlib.md5(raw).hexdigest()
    if actual != MD5[filename]:
      raise ValueError(
        f"md5 mismatch for {path}: expected {MD5[filename]}, got {actual}; the file "
        f"is not the standard Penn Treebank {filename} (pass check_md5=False to use it anyway)"
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


def load_ptb(path: str, *, check_md5: bool = True) -> PTB:
  """Reads and tokenises the Penn Treebank files in ``path``.

  Args:
    path: folder holding ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt``.
    check_md5: compare each file's md5 with ``MD5``.

  Returns:
    A ``PTB`` (929,589 / 73,760 / 82,430 tokens and 10,000 words for the
    standard files).

  Raises:
    FileNotFoundError: a file is missing.
    ValueError: an md5 mismatch, or a valid/test word outside the vocabulary.
  """
  path = os.path.expanduser(os.fspath(path))
  words = {s: _read(path, f"ptb.{s}.txt", check_md5) for s in SPLITS}
  vocab = build_vocab(words["train"])
  ids = {w: i for i, w in enumerate(vocab)}
  streams = {}
  for split, ws in words.items():
    unknown = sorted({w for w in ws if w not in ids})
    if unknown:
      # The TF reader drops such words silently, which would change the perplexity.
      raise ValueError(
        f"ptb.{split}.txt has {len(unknown)} word(s) not in the training vocabulary, "
        f"e.g. {unknown[:5]}; the standard files map rare words to <unk>"
      )
    streams[split] = np.array([ids[w] for w in ws], np.int32)
  return PTB(**streams, vocab=vocab)


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
