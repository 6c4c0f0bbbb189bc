"""What several test files share: loading a script that is not a package module, and the
Penn Treebank files beside the repository."""

import importlib.util
import sys
from pathlib import Path

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
