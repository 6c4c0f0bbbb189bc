"""What several test files share: the repository's paths, loading a script that is not a
package module, the Penn Treebank files beside the repository, a small text corpus, the
masks a forward pass draws, and a run folder's restored parameters."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The files lie beside the repository, never in it: <repo>/../shared/data/ptb.
PTB_DIR = ROOT.parent / "shared" / "data" / "ptb"
needs_ptb = pytest.mark.skipif(
  not PTB_DIR.is_dir(), reason=f"Penn Treebank files not found at {PTB_DIR}"
)


def load_script(relative: str, name: str | None = None):
  """The module of the script at ``ROOT / relative`` (e.g. ``"scripts/bench.py"``), loaded
  once per process under ``name`` (default: the file's stem)."""
  path = ROOT / relative
  name = name or path.stem
  if name not in sys.modules:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses look their module up
    spec.loader.exec_module(module)
  return sys.modules[name]


def write_corpus(folder: Path, prefix: str = "", n_lines=(400, 40, 40), seed: int = 0) -> Path:
  """A corpus in PTB's layout (``{prefix}{train,valid,test}.txt``) under ``folder``:
  sentences of a tiny grammar in which each word is mostly followed by the next one."""
  rng = np.random.default_rng(seed)
  words = [f"w{i}" for i in range(12)]
  folder.mkdir(parents=True, exist_ok=True)
  for split, n in zip(("train", "valid", "test"), n_lines, strict=True):
    lines = []
    for _ in range(n):
      i = int(rng.integers(12))
      line = []
      for _ in range(int(rng.integers(4, 9))):
        line.append(words[i])
        i = (i + 1) % 12 if rng.random() < 0.9 else int(rng.integers(12))
      lines.append(" ".join(line))
    (folder / f"{prefix}{split}.txt").write_text("\n".join(lines) + "\n")
  return folder


def record_masks(monkeypatch, *names: str) -> list[np.ndarray]:
  """From now on (within ``monkeypatch``), every mask the ``masks`` functions ``names``
  (default: ``keep_mask`` and ``keep_mask16``) draw, in order; a forward pass run
  un-jitted fills the list with concrete arrays."""
  from lstmdrop_jax import masks

  drawn = []

  def recording(draw):
    def record(key, rate, shape, **kw):
      m = draw(key, rate, shape, **kw)
      drawn.append(np.asarray(m))
      return m

    return record

  for name in names or ("keep_mask", "keep_mask16"):
    monkeypatch.setattr(masks, name, recording(getattr(masks, name)))
  return drawn


def restored_params(workdir, epoch: int | None = None):
  """The parameters of a run folder's last checkpoint (or that of ``epoch``)."""
  from lstmdrop_jax.checkpoint import RunCheckpoints

  ckpt = RunCheckpoints(workdir)
  try:
    state, _ = ckpt.restore(epoch=epoch)
  finally:
    ckpt.close()
  return state["params"]


def assert_trees_close(a, b, rtol: float = 1e-5, atol: float = 1e-6) -> None:
  """Two pytrees of arrays agree leaf by leaf to within the tolerances."""
  import jax

  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b)
