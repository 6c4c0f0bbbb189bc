"""The library's shape: its import layers (no cycle, no arrow up), module and function sizes.

Read from the source (every ``import`` statement, those inside functions included), so
a lazy import cannot hide a cycle.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lstmdrop_jax"

#: The import layers, lowest first: a module imports only from layers below its own.
LAYERS: tuple[tuple[str, ...], ...] = (
  # Leaves: no library import.
  ("platform", "placements", "tables", "console", "checkpoint", "convert", "parallel", "plots",
   "losses", "data.text", "data.batching"),
  ("groups", "masks", "fused", "optim", "run_folder", "data.normalize", "data.ptb",
   "data.synthetic"),
  ("dropout", "layer", "steps", "data.arrays"),
  ("lstm", "data.ucr", "results"),
  ("models", "data"),
  ("tasks.classification", "tasks.language_model"),
  ("tasks",),
  ("config",),
  ("train.group", "report", "predict"),
  ("train",),
  ("cli", "sweep"),
  ("train.__main__", ""),  # "": the package itself, lstmdrop_jax/__init__.py
)  # fmt: skip
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # of code: a docstring does not count


def _modules() -> dict[str, Path]:
  out = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
  """The library modules ``path`` imports (``from lstmdrop_jax import x`` names module x
  where x is one)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lstmdrop_jax"):
      base = node.module.removeprefix("lstmdrop_jax").removeprefix(".")
      for alias in node.names:
        sub = f"{base}.{alias.name}".lstrip(".")
        found.add(sub if sub in modules else base)
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("lstmdrop_jax"):
          found.add(alias.name.removeprefix("lstmdrop_jax").removeprefix("."))
  return found


def test_every_module_has_a_layer_and_imports_only_from_layers_below():
  modules = _modules()
  layer_of = {m: i for i, layer in enumerate(LAYERS) for m in layer}
  assert sorted(modules) == sorted(layer_of), "a module was added or removed: place it in LAYERS"
  upward = []
  for module, path in modules.items():
    for dep in _imports(path, modules) - {module}:
      if layer_of[dep] >= layer_of[module]:
        upward.append(f"{module or 'lstmdrop_jax'} (layer {layer_of[module]}) imports {dep} "
                      f"(layer {layer_of[dep]})")  # fmt: skip
  assert not upward, "\n".join(upward)


def test_the_layer_check_catches_a_cycle(tmp_path):
  """The check above reads lazy imports too: a function-level import back up is found."""
  (tmp_path / "placements.py").write_text(
    "def union():\n  from lstmdrop_jax.groups import GroupDropout\n"
  )
  assert _imports(tmp_path / "placements.py", _modules()) == {"groups"}


@pytest.mark.parametrize("module", sorted(_modules()))
def test_modules_and_functions_stay_small(module):
  path = _modules()[module]
  source = path.read_text()
  assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: split it along its parts"
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
      lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0
      assert lines <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name}: {lines} lines"
