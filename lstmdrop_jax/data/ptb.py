"""The Penn Treebank, word level (Mikolov's preprocessed split): a named text corpus.

``load_ptb(folder)`` reads ``ptb.train.txt``, ``ptb.valid.txt`` and
``ptb.test.txt`` (the ``data/`` folder of Mikolov's ``simple-examples``
archive) and checks their md5 sums, so every run of ``dataset='ptb'`` trains
on exactly the files of Zaremba et al. (2014): 929,589 / 73,760 / 82,430
tokens and 10,000 words. Reading and batching are ``text.py``'s.
"""

from __future__ import annotations

import os

from lstmdrop_jax.data.text import (
  EOS,
  SPLITS,
  Corpus,
  bptt_batches,
  build_vocab,
  load_corpus,
  num_bptt_batches,
)

__all__ = ["EOS", "MD5", "PTB", "SPLITS", "bptt_batches", "build_vocab", "load_ptb",
           "num_bptt_batches"]  # fmt: skip

MD5 = {
  "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
  "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
  "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
}
PTB = Corpus  # the three streams and the vocabulary


def load_ptb(path: str, *, check_md5: bool = True) -> Corpus:
  """Reads and tokenises the Penn Treebank files in ``path``.

  Args:
    path: folder holding ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt``.
    check_md5: compare each file's md5 with ``MD5``.

  Raises:
    FileNotFoundError: a file is missing.
    ValueError: an md5 mismatch, or a valid/test word outside the vocabulary.
  """
  return load_corpus(
    os.fspath(path),
    files={s: f"ptb.{s}.txt" for s in SPLITS},
    md5=MD5 if check_md5 else None,
    missing_hint=(
      f": expected the three files {', '.join(MD5)} of Mikolov's simple-examples/data "
      "(Penn Treebank)"
    ),
  )
