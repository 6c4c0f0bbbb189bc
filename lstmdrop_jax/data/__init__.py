"""Datasets and input pipelines (numpy only, no JAX).

Classification (``[N, T, F]`` series, one label each):

* ``"synthetic"``: the motivating text's shape (T=100, F=20, binary), a
  planted temporal signal in noise, a small noisy training set;
  ``"synthetic_large"``: the same task, T=40, a 600-series pool and 1,000
  test series (``synthetic.NAMED``).
* UCR/UEA through aeon: the bundled ``BUNDLED`` datasets load offline; any
  other name aeon knows loads from ``.ts`` files under ``data_dir``.

* Your own arrays: ``ArrayData`` in Python, or an ``.npz`` file of them
  (``arrays.py``; ``--dataset path/to/file.npz``).

``load_dataset(name, seed=...)`` returns a ``Dataset`` whose official train
split is split again into train/val by ``seed``; ``train_batches`` and
``eval_batches`` turn a ``Split`` into static-shape batches.

Language modelling (``TEXT_DATASETS``): ``"ptb"``, the Penn Treebank with its
md5 sums checked (``ptb.py``), and ``"text"``, any word-level corpus in the
same layout (``text.py``); ``load_text(name, data_dir)`` reads either.
"""

from __future__ import annotations

import difflib
import os

from lstmdrop_jax.data.arrays import ArrayData
from lstmdrop_jax.data.batching import (
  Dataset,
  Split,
  check_val_fraction,
  epoch_order,
  eval_batches,
  num_batches,
  train_batches,
)
from lstmdrop_jax.data.synthetic import NAMED as _SYNTHETIC_TASKS
from lstmdrop_jax.data.synthetic import make_synthetic

#: The generated datasets (``synthetic.NAMED``).
SYNTHETIC = tuple(_SYNTHETIC_TASKS)
#: UCR/UEA datasets that aeon ships, so they load without the network.
BUNDLED = ("GunPoint", "BasicMotions", "ArrowHead", "ItalyPowerDemand", "JapaneseVowels")
#: Names that always work.
DATASETS = (*SYNTHETIC, *BUNDLED)
#: Word-level language-modelling corpora (read from data_dir).
TEXT_DATASETS = ("ptb", "text")

__all__ = [
  "BUNDLED",
  "DATASETS",
  "TEXT_DATASETS",
  "ArrayData",
  "Dataset",
  "Split",
  "check_dataset_name",
  "check_text_dataset",
  "epoch_order",
  "eval_batches",
  "is_text_dataset",
  "load_dataset",
  "load_text",
  "num_batches",
  "train_batches",
]


def _aeon_names() -> set[str]:
  """Every classification dataset name aeon lists (UCR univariate, UEA multivariate)."""
  from aeon.datasets import tsc_datasets

  names = set()
  for attr in ("univariate", "multivariate", "tsc_zenodo"):
    names.update(getattr(tsc_datasets, attr, ()))
  return names


def check_dataset_name(name: str, data_dir: str | None = None) -> None:
  """Raises ``ValueError`` unless ``load_dataset`` can know ``name``.

  Valid: a name in ``DATASETS``, any UCR/UEA name in aeon's lists, or a
  folder ``data_dir/name`` holding ``name_TRAIN.ts`` and ``name_TEST.ts``.
  Loads nothing; whether the files of a non-bundled dataset exist is checked
  by ``load_dataset``.
  """
  if not isinstance(name, str):
    raise ValueError(f"dataset name must be a string, got {name!r}")
  if name in DATASETS:
    return
  if name.endswith(".npz"):
    if not os.path.isfile(os.path.expanduser(name)):
      raise ValueError(
        f"dataset file {name!r} not found; --dataset takes a dataset name or the path of an "
        ".npz file of arrays (keys: x, y[, lengths, x_val, y_val, x_test, y_test, classes])"
      )
    return
  if data_dir is not None:
    from lstmdrop_jax.data.ucr import has_ts_files

    if has_ts_files(os.path.expanduser(data_dir), name):
      return
  known = _aeon_names()
  if name in known:
    return
  candidates = list(dict.fromkeys([*DATASETS, *sorted(known)]))
  close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.75)
  hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
  raise ValueError(
    f"unknown dataset {name!r}. Valid names: {', '.join(DATASETS)}. Any other UCR/UEA "
    f"classification dataset that aeon knows (aeon.datasets.tsc_datasets) also works "
    f"once its .ts files are under data_dir (data_dir/<name>/<name>_TRAIN.ts and "
    f"_TEST.ts).{hint}"
  )


def load_dataset(
  name: str,
  *,
  seed: int,
  val_fraction: float = 0.3,
  data_dir: str | None = None,
  arrays: ArrayData | None = None,
  layout: str = "NTF",
) -> Dataset:
  """Loads a classification dataset by name.

  Args:
    name: ``"synthetic"``, ``"synthetic_large"``, a ``BUNDLED`` name, or another UCR/UEA name whose
      ``.ts`` files lie under ``data_dir``.
    seed: picks the train/val split of the official train split (not the
      synthetic task, which is fixed).
    val_fraction: share of the official train split held out, in ``(0, 1)``.
    data_dir: folder of ``<name>/<name>_{TRAIN,TEST}.ts`` files for datasets
      aeon does not bundle.
    arrays: your own data (``name`` is then only its label); a ``name``
      ending in ``.npz`` reads the arrays from that file.
    layout: how that file's ``x`` arrays are laid out (``arrays.LAYOUTS``).

  Raises:
    ValueError: an unknown name (the message lists the valid ones) or a bad
      ``val_fraction``.
    FileNotFoundError: a known but not bundled dataset missing from ``data_dir``.
  """
  check_val_fraction(val_fraction)
  if arrays is not None:
    return arrays.dataset(name, seed=seed, val_fraction=val_fraction)
  check_dataset_name(name, data_dir)
  if name.endswith(".npz"):
    return ArrayData.from_npz(os.path.expanduser(name), layout).dataset(
      name, seed=seed, val_fraction=val_fraction
    )
  if name in SYNTHETIC:
    return make_synthetic(seed, val_fraction=val_fraction, name=name)
  from lstmdrop_jax.data.ucr import load_ucr

  return load_ucr(name, seed, val_fraction=val_fraction, extract_path=data_dir)


def is_text_dataset(name: str) -> bool:
  """True for the language-modelling datasets (``TEXT_DATASETS``)."""
  return name in TEXT_DATASETS


def check_text_dataset(name: str, data_dir: str | None) -> None:
  """Raises ``ValueError`` unless ``load_text`` can be given ``name`` and ``data_dir``."""
  if name not in TEXT_DATASETS:
    raise ValueError(f"{name!r} is not a text dataset; valid ones are {list(TEXT_DATASETS)}")
  if data_dir is None:
    files = "ptb.{train,valid,test}.txt" if name == "ptb" else "{train,valid,test}.txt"
    raise ValueError(f"dataset {name!r} needs --data-dir, the folder holding {files}")


def load_text(name: str, data_dir: str):
  """Reads a text corpus: ``"ptb"`` (md5-checked) or ``"text"`` (any corpus folder).

  Returns:
    A ``text.Corpus``.
  """
  check_text_dataset(name, data_dir)
  if name == "ptb":
    from lstmdrop_jax.data.ptb import load_ptb

    return load_ptb(data_dir)
  from lstmdrop_jax.data.text import load_corpus

  return load_corpus(data_dir)
