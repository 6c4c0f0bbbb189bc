"""Use a trained run: ``load_run(workdir)`` in Python, ``python -m lstmdrop_jax.predict`` outside.

``load_run`` rebuilds everything needed to apply a run in other code: its
config, the model, the variables of a checkpoint and the normalisation the
run fitted on its training split (``data.json``). ``LoadedRun.predict_proba``
takes raw series, as the run's data came before normalisation::

  run = load_run("runs/gunpoint")                 # the best checkpoint
  p_NK = run.predict_proba(x_NTF)                 # class probabilities
  mean_NK, std_NK = run.predict_proba(x_NTF, mc_samples=50)   # Monte-Carlo dropout

Command line (class probabilities of every series to a CSV file)::

  python -m lstmdrop_jax.predict --workdir runs/gunpoint --input new.npz --out preds.csv
  python -m lstmdrop_jax.predict --workdir runs/gunpoint --input GunPoint --mc-samples 50 \\
      --out preds.csv

``--input`` is an ``.npz`` file with ``x`` (and optional ``lengths``, and
``y`` to score the predictions), or the name of a UCR/UEA dataset (its
official test split). ``--export-torch FILE`` also writes the classifier as
a PyTorch state dict (``convert.to_torch_classifier``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from lstmdrop_jax import tables
from lstmdrop_jax.checkpoint import RunCheckpoints
from lstmdrop_jax.config import Config
from lstmdrop_jax.data.arrays import as_series, open_npz
from lstmdrop_jax.data.normalize import Normalizer
from lstmdrop_jax.run_folder import RunFolderError, read_config, read_json, read_jsonl
from lstmdrop_jax.tasks import build_model


@dataclasses.dataclass(frozen=True)
class LoadedRun:
  """A trained run, ready to apply.

  Attributes:
    config: the run's ``Config``.
    model: the Flax model (``SequenceClassifier`` or ``LanguageModel``).
    variables: ``{'params': ...}`` of the checkpoint.
    epoch: the checkpoint's epoch.
    described: what the run was trained on (``data.json``).
    normalizer: the normalisation of the run's inputs, or None.
    classes: class id ``i`` is ``classes[i]`` (classifiers).
  """

  config: Config
  model: Any
  variables: dict[str, Any]
  epoch: int
  described: dict[str, Any]
  normalizer: Normalizer | None
  classes: tuple[str, ...] | None

  def logits(self, x_BTF: np.ndarray, lengths_B: np.ndarray | None = None) -> jax.Array:
    """The model's logits on already normalised inputs (no dropout)."""
    return self.model.apply(self.variables, jnp.asarray(x_BTF), lengths=_maybe(lengths_B))

  def predict_proba(
    self,
    x_NTF: np.ndarray,
    lengths_N: np.ndarray | None = None,
    *,
    mc_samples: int = 0,
    seed: int = 0,
    batch_size: int = 256,
    layout: str = "NTF",
  ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``[N, K]`` of raw series ``[N, T, F]`` (``[N, T]``: one channel;
    ``layout="NCT"``: aeon's ``[N, channels, time]``).

    With ``mc_samples`` K > 0: ``(mean, std)`` over K stochastic passes with
    the run's dropout on (Monte-Carlo dropout), keys from ``seed``.

    Raises:
      ValueError: a language model's run, bad series, or ``mc_samples`` on a run
        without dropout (its passes would all be the same).
    """
    if self.classes is None:
      raise ValueError("predict_proba is for classifiers; this run is a language model")
    if mc_samples and not self.model.dropout.active():
      raise ValueError(
        "mc_samples averages passes with dropout on, and this run has no dropout: the spread "
        "would be zero by construction. Use mc_samples=0"
      )
    x = as_series(x_NTF, layout=layout)
    if self.normalizer is not None:
      x = self.normalizer(x, lengths_N)
    out = [
      np.asarray(
        self._probs(x[i : i + batch_size], _slice(lengths_N, i, batch_size), mc_samples, seed + i)
      )
      for i in range(0, len(x), batch_size)
    ]
    if not mc_samples:
      return np.concatenate(out)
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])

  def _probs(self, x, lengths, mc_samples: int, seed: int):
    if not mc_samples:
      return _to_probs(self.logits(x, lengths))
    keys = jax.random.split(jax.random.key(seed), mc_samples)
    apply = lambda k: _to_probs(
      self.model.apply(
        self.variables, jnp.asarray(x), lengths=_maybe(lengths), train=True, rngs={"dropout": k}
      )
    )
    p_SNK = jax.vmap(apply)(keys)
    return jnp.mean(p_SNK, 0), jnp.std(p_SNK, 0)


def _maybe(lengths):
  return None if lengths is None else jnp.asarray(lengths)


def _slice(lengths, i, n):
  return None if lengths is None else np.asarray(lengths)[i : i + n]


def _to_probs(logits: jax.Array) -> jax.Array:
  """``[N, K]`` probabilities of one sigmoid logit ``[N]`` or softmax logits ``[N, K]``."""
  if logits.ndim == 1:
    p1 = jax.nn.sigmoid(logits)
    return jnp.stack([1.0 - p1, p1], axis=-1)
  return jax.nn.softmax(logits, axis=-1)


def load_run(workdir: str | Path, checkpoint: str = "best") -> LoadedRun:
  """Everything needed to apply the run in ``workdir`` (see ``LoadedRun``).

  Args:
    workdir: a run folder.
    checkpoint: ``"best"`` (the best validation score) or ``"last"``.

  Raises:
    FileNotFoundError: not a run folder, or it has no such checkpoint yet.
    RunFolderError: a damaged file.
  """
  path = Path(workdir)
  if checkpoint not in ("best", "last"):
    raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
  raw = read_config(path) if path.is_dir() else None
  if raw is None:
    raise FileNotFoundError(f"{str(path)!r} is not a run folder (no config.json)")
  config = Config.from_dict(raw)
  described = _described(path)
  ckpt = RunCheckpoints(path)
  try:
    restored = ckpt.restore(which=checkpoint)
  finally:
    ckpt.close()
  if restored is None:
    raise FileNotFoundError(f"{path} has no {checkpoint} checkpoint yet; train it first")
  state, meta = restored
  norm = described.get("normalizer")
  classes = described.get("classes")
  return LoadedRun(
    config=config,
    model=build_model(config, described),
    variables={"params": state["params"]},
    epoch=int(meta["epoch"]),
    described=described,
    normalizer=None if norm is None else Normalizer.from_dict(norm),
    classes=None if classes is None else tuple(classes),
  )


def _described(path: Path) -> dict[str, Any]:
  """``data.json``; for folders written before it existed, the log's start record."""
  if (path / "data.json").exists():
    return read_json(path / "data.json", "delete it and re-run the run's command to rewrite it")
  start = [r for r in read_jsonl(path / "metrics.jsonl") if r.get("event") == "start"]
  if not start:
    raise RunFolderError(f"{path} has neither data.json nor a start record; train it first")
  return start[0]


# --- the command line --------------------------------------------------------


def _inputs(name: str, run: LoadedRun) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
  """Raw ``x``, ``lengths`` and class ids (or None) of ``--input``."""
  if name.endswith(".npz"):
    if not Path(name).is_file():
      raise FileNotFoundError(f"--input {name!r}: no such file")
    with open_npz(name) as f:
      if "x" not in f.files:
        raise ValueError(f"--input {name}: needs the key 'x' (and optionally lengths, y)")
      x, lengths = f["x"], f["lengths"] if "lengths" in f.files else None
      y = f["y"] if "y" in f.files else None
    if y is not None and not np.issubdtype(y.dtype, np.integer):
      y = _ids([str(v) for v in y], run.classes)
    return x, lengths, y
  from lstmdrop_jax.data import ucr

  splits, classes = ucr.load_raw(name, run.config.data_dir)
  test = splits["test"]
  return test.x, test.lengths, _ids([classes[i] for i in test.y], run.classes)


def _ids(labels, classes) -> np.ndarray:
  unknown = sorted(set(labels) - set(classes))
  if unknown:
    raise ValueError(f"labels {unknown[:5]} are not classes of the run ({list(classes)})")
  return np.array([classes.index(v) for v in labels], np.int32)


def predict_main(argv=None) -> dict[str, Any]:
  """``python -m lstmdrop_jax.predict``: see the module doc."""
  import tyro

  args = tyro.cli(_Args, args=argv, prog="python -m lstmdrop_jax.predict", description=_DESC)
  try:
    return _predict(args)
  except (ValueError, OSError, RunFolderError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    raise SystemExit(2) from None


def _predict(args: _Args) -> dict[str, Any]:
  run = load_run(args.workdir, args.checkpoint)
  x, lengths, y = _inputs(args.input, run)
  layout = args.layout or (run.config.layout if args.input.endswith(".npz") else "NTF")
  out = run.predict_proba(x, lengths, mc_samples=args.mc_samples, seed=args.seed, layout=layout)
  mean = out[0] if args.mc_samples else out
  pred = mean.argmax(-1)
  header = ["index", "predicted"] + (["label"] if y is not None else [])
  if args.mc_samples:
    header += [f"p_{c}_{stat}" for c in run.classes for stat in ("mean", "std")]
    probs = np.stack([out[0], out[1]], axis=-1).reshape(len(pred), -1)  # mean, std per class
  else:
    header += [f"p_{c}" for c in run.classes]
    probs = mean
  rows = []
  for i, p in enumerate(pred):
    label = [run.classes[y[i]]] if y is not None else []
    rows.append([i, run.classes[p], *label, *(f"{v:.6g}" for v in probs[i])])
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(tables.csv_text(header, rows))
  report = {"run": str(args.workdir), "checkpoint": f"{args.checkpoint} (epoch {run.epoch})"}
  report.update({"series": len(pred), "out": str(args.out)})
  if y is not None:
    report["accuracy"] = float((pred == y).mean())
  if args.export_torch is not None:
    report["torch_state_dict"] = str(_export_torch(run, args.export_torch))
  print(json.dumps(report, indent=2))
  return report


def _export_torch(run: LoadedRun, path: Path) -> Path:
  from lstmdrop_jax.convert import to_torch_classifier

  try:
    import torch
  except ImportError:
    raise ValueError("--export-torch needs PyTorch installed (pip install torch)") from None
  state = {k: torch.from_numpy(v) for k, v in to_torch_classifier(run.variables["params"]).items()}
  torch.save(state, path)
  return path


_DESC = "Class probabilities of new series from a trained run (and its Monte-Carlo spread)."


@dataclasses.dataclass(frozen=True)
class _Args:
  workdir: Path
  """The run folder."""
  input: str
  """An .npz file with x (and optionally lengths, y), or a UCR/UEA name (its test split)."""
  out: Path
  """The CSV file to write: one row per series, the predicted class and its probabilities."""
  checkpoint: str = "best"
  """best (the best validation score) or last."""
  mc_samples: int = 0
  """Monte-Carlo dropout: the mean and std of the probabilities over this many passes."""
  seed: int = 0
  """Seeds the Monte-Carlo passes."""
  layout: Literal["NTF", "NCT"] | None = None
  """How the .npz input's x is laid out (default: as the run's training arrays were)."""
  export_torch: Path | None = None
  """Also save the classifier as a PyTorch state dict (nn.LSTM + nn.Linear) here."""


if __name__ == "__main__":
  predict_main()
