"""scripts/bench.py and bench_models.py: options, rounds, failures, the JSON file and its table.

Everything but ``test_measures_one_step_in_a_child_process`` replaces the
measuring subprocess (``bench.spawn`` or ``subprocess.run``), so these tests
check the driver's logic in seconds; that one runs a real measurement.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
  """Imports ``scripts/{name}.py`` as ``python scripts/...`` would, its siblings importable."""
  if name not in sys.modules:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it, so that bench's `import bench_models` finds it
    spec.loader.exec_module(module)
  return sys.modules[name]


bench_models = _load("bench_models")
bench = _load("bench")


def _result(ms: float) -> dict:
  """What a measuring child reports."""
  return {"ms": ms, "compile_s": 0.5, "peak_mb": None, "device": "cpu", "devices": 1}


def _record(**kw) -> dict:
  """A hand-written ``--json`` record: an H200 invocation with a failed torch and 8 seeds."""
  record = {
    "tag": "fp32",
    "device": "NVIDIA H200",
    "dtype": "float32",
    "precision": "default",
    "unroll": None,
    "seeds": 8,
    "shard": [],
    "cpu_devices": None,
    "rounds": 1,
    "warmup": 5,
    "steps": 20,
    "repeats": 5,
    "impls": ["ours", "torch"],
    "measured": ["ours", "torch", "ours x8 seeds"],
    "results": [
      {
        "config": "seed_clf",
        "gflop_per_step": 1.0,
        "tokens_per_step": 6400,
        "ours": dict(_result(1.978), ms_rounds=[1.978]),
        "torch": None,
        "ours x8 seeds": _result(3.007),
      }
    ],
  }
  return {**record, **kw}


@pytest.mark.parametrize(
  "args, message",
  [
    (["--rounds", "0"], "--rounds must be >= 1, got 0"),
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
    (["--cpu-devices", "0"], "--cpu-devices must be >= 1, got 0"),
    (["--timeout", "0"], "--timeout must be > 0 seconds, got 0"),
    (["--shard", "torch"], "argument --shard: invalid choice: 'torch'"),
    (["--precision", "fp16"], "argument --precision: invalid choice: 'fp16'"),
    (["--show", "no/such.json"], "--show: no such file: no/such.json"),
    (["--until", "0"], "unrecognized arguments: --until 0"),  # the caller keeps the budget
    (["--malloc", "default"], "unrecognized arguments: --malloc default"),
  ],
)
def test_bad_arguments_are_refused_with_their_reason(args, message, capsys):
  with pytest.raises(SystemExit) as stop:
    bench.main(args)
  assert stop.value.code == 2
  assert message in capsys.readouterr().err


def test_the_default_tag_names_what_sets_the_invocation_apart():
  args = bench.parse_args(["--impls", "ours", "flax", "--unroll", "4", "--seeds", "8", "--shard"])
  assert args.tag == "float32 ours+flax unroll 4 8 seeds shard ours+flax"
  assert bench.parse_args(["--dtype", "bfloat16", "--impls", "torch"]).tag == "bfloat16 torch"
  assert bench.parse_args(["--tag", "mine"]).tag == "mine"


def _fake_spawn(monkeypatch, outcomes: dict[str, list]):
  """Replaces the measuring child: ``outcomes[impl]`` in call order; returns the calls."""
  calls = []

  def spawn(args, config, impl, seeds=1):
    calls.append((config, impl, seeds))
    ms = outcomes[impl if seeds == 1 else f"{impl} x{seeds}"].pop(0)
    return None if ms is None else _result(ms)

  monkeypatch.setattr(bench, "spawn", spawn)
  return calls


def test_rounds_alternate_and_report_the_median(monkeypatch, capsys):
  calls = _fake_spawn(monkeypatch, {"ours": [2.0, 9.0, 4.0], "flax": [8.0, 6.0, 7.0]})
  bench.main(["--configs", "seed_clf", "--impls", "ours", "flax", "--rounds", "3"])
  assert calls == [("seed_clf", "ours", 1), ("seed_clf", "flax", 1)] * 3
  out = capsys.readouterr().out
  assert "median of 5x20 steps, median of 3 alternating rounds" in out
  # tokens/s: 64 x 100 tokens in 4 ms; ours vs flax: 7 / 4
  assert "| seed_clf | 4.000 | 7.000 | 1,600,000 | 1.75x | n/a |" in out


def test_dropout_presets_are_columns_measured_against_the_first(monkeypatch, capsys):
  calls = _fake_spawn(monkeypatch, {"ours": [4.0], "ours[zoneout]": [4.4], "ours[rnndrop]": [5.0]})
  bench.main(["--configs", "seed_clf", "--impls", "ours", "--dropout", "zaremba", "zoneout",
              "rnndrop"])  # fmt: skip
  assert [c[1] for c in calls] == ["ours", "ours[zoneout]", "ours[rnndrop]"]
  out = capsys.readouterr().out
  assert "| ours[zoneout] / ours | ours[rnndrop] / ours |" in out
  assert out.rstrip().endswith("| 1.10x | 1.25x |")
  monkeypatch.undo()  # the real spawn, with a fake child
  seen = _fake_run(monkeypatch)
  bench.spawn(_spawn_args(dropout=["zaremba", "rnndrop"]), "seed_clf", "ours[rnndrop]")
  cmd = seen["cmd"]  # the child measures our model with that preset
  assert cmd[cmd.index("--impl") + 1] == "ours" and cmd[cmd.index("--dropout") + 1] == "rnndrop"


def test_a_failed_measurement_is_reported_and_fails_the_run(monkeypatch, tmp_path, capsys):
  """One failed round fails the implementation; the others and the JSON are still written."""
  _fake_spawn(monkeypatch, {"ours": [3.0, 5.0], "flax": [9.0, None], "ours x4": [6.0]})
  out = tmp_path / "bench.json"
  args = ["--configs", "seed_clf", "--impls", "ours", "flax", "--rounds", "2", "--seeds", "4"]
  with pytest.raises(SystemExit) as stop:
    bench.main([*args, "--json", str(out)])
  assert str(stop.value) == "failed: seed_clf/flax"
  assert "| seed_clf | 4.000 | failed | 6.000 | 2.67x | 1,600,000 | n/a | n/a |" in (
    capsys.readouterr().out
  )
  (record,) = json.loads(out.read_text())
  (row,) = record["results"]
  assert row["flax"] is None and row["ours"]["ms_rounds"] == [3.0, 5.0]
  assert record["measured"] == ["ours", "flax", "ours x4 seeds"]


def test_json_appends_each_invocation_and_show_prints_them_all(monkeypatch, tmp_path, capsys):
  path = tmp_path / "bench.json"
  path.write_text(json.dumps([_record()]))
  _fake_spawn(monkeypatch, {"ours-scan": [12.5]})
  bench.main(
    ["--configs", "wide_clf", "--impls", "ours-scan", "--unroll", "4", "--json", str(path)]
  )
  records = json.loads(path.read_text())
  assert [r["tag"] for r in records] == ["fp32", "float32 ours-scan unroll 4"]
  capsys.readouterr()
  bench.main(["--show", str(path)])
  assert capsys.readouterr().out.splitlines() == [
    "| run | device | config | dtype | precision | unroll | impl | ms/step |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
    "| fp32 | NVIDIA H200 | seed_clf | float32 | default | default | ours | 1.978 |",
    "| fp32 | NVIDIA H200 | seed_clf | float32 | default | default | torch | failed |",
    "| fp32 | NVIDIA H200 | seed_clf | float32 | default | default | ours x8 seeds | 3.007 |",
    "| float32 ours-scan unroll 4 | cpu | wide_clf | float32 | default | 4 | ours-scan | 12.500 |",
  ]


def test_invocation_table_of_a_record_compares_ours_with_each_baseline():
  table = bench.invocation_table(_record())
  assert table.startswith(
    "ms per training step on NVIDIA H200 (float32, unroll default, precision default), "
    "median of 5x20 steps\n\n"
    "| config | ours | torch | ours x8 seeds | 8 seeds vs one | tokens/s (ours) | ours vs torch "
    "| peak MB (ours) |"
  )
  assert "| seed_clf | 1.978 | failed | 3.007 | 5.26x | 3,235,592 | n/a | n/a |" in table


def _spawn_args(**kw):
  args = bench.parse_args(
    ["--precision", "tf32", "--warmup", "0", "--steps", "1", "--timeout", "5"]
  )
  for k, v in kw.items():
    setattr(args, k, v)
  return args


def _fake_run(monkeypatch, stdout='RESULT {"ms": 1.5}\n', raises=None):
  seen = {}

  def run(cmd, timeout, env, **kw):
    seen.update(cmd=cmd, timeout=timeout, env=env)
    if raises:
      raise raises(cmd, timeout)
    return subprocess.CompletedProcess(cmd, 0, stdout=stdout, stderr="")

  monkeypatch.setattr(bench.subprocess, "run", run)
  return seen


def test_spawn_passes_the_options_and_keeps_freed_memory_in_every_child(monkeypatch):
  from lstmdrop_jax.host_memory import MALLOC_ENV, NO_MALLOPT_ENV

  monkeypatch.delenv(NO_MALLOPT_ENV, raising=False)
  for var in MALLOC_ENV:
    monkeypatch.delenv(var, raising=False)
  seen = _fake_run(monkeypatch)
  assert bench.spawn(_spawn_args(), "seed_clf", "torch") == {"ms": 1.5}
  cmd = seen["cmd"]
  assert cmd[cmd.index("--precision") + 1] == "tf32" and cmd[cmd.index("--impl") + 1] == "torch"
  assert seen["timeout"] == 5 and seen["env"]["JAX_PLATFORMS"] == "cpu"
  assert {k: seen["env"][k] for k in MALLOC_ENV} == MALLOC_ENV
  monkeypatch.setenv(NO_MALLOPT_ENV, "1")  # glibc's defaults, for every implementation
  bench.spawn(_spawn_args(), "seed_clf", "ours")
  assert not set(MALLOC_ENV) & set(seen["env"])


def test_spawn_reports_a_timeout_or_a_crash_as_failed(monkeypatch, capsys):
  _fake_run(monkeypatch, raises=subprocess.TimeoutExpired)
  assert bench.spawn(_spawn_args(), "seed_clf", "ours") is None
  assert "seed_clf/ours: failed: timed out after 5 s" in capsys.readouterr().err
  _fake_run(monkeypatch, stdout="no result line\n")
  assert bench.spawn(_spawn_args(), "seed_clf", "flax") is None
  assert "seed_clf/flax: failed" in capsys.readouterr().err


def test_set_matmul_precision_sets_jax_and_leaves_the_default_alone():
  import jax

  before = jax.config.jax_default_matmul_precision
  try:
    bench_models.set_matmul_precision("ours", "default")
    assert jax.config.jax_default_matmul_precision == before
    bench_models.set_matmul_precision("ours", "highest")
    assert jax.config.jax_default_matmul_precision == "highest"
    bench_models.set_matmul_precision("flax", "tf32")
    assert jax.config.jax_default_matmul_precision == "tensorfloat32"
  finally:
    jax.config.update("jax_default_matmul_precision", before)


@pytest.mark.parametrize("impl", ["ours", "flax"])
def test_the_language_model_steps_trace_with_their_objective_and_seeds(impl):
  """The LM's state carries its streams (steps.LANGUAGE_MODEL); K seeds add a leading axis."""
  import jax

  s = bench_models.jax_step("ptb_small", impl, seeds=2)
  assert s.batch["x"].shape == (2, 20, 20)
  if impl == "ours":
    assert all(leaf.shape[:2] == (2, 20) for leaf in jax.tree.leaves(s.state.carry))
  state, _ = jax.eval_shape(s.step, s.state, s.batch, s.key)
  assert jax.tree.structure(state) == jax.tree.structure(s.state)


def test_our_sharded_step_is_the_librarys_per_device_step():
  """``--shard`` times the library's data-parallel step (``batch_axis``): on one device
  it is the plain step, bit for bit; the language model's carry is split with the batch."""
  import jax
  import numpy as np

  plain, split = (bench_models.jax_step("seed_clf", "ours", shard=s) for s in (False, True))
  a, b = (
    plain.step(plain.state, plain.batch, plain.key),
    split.step(split.state, split.batch, split.key),
  )
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))
  lm = bench_models.jax_step("ptb_small", "ours", shard=True)
  state, _ = jax.eval_shape(lm.step, lm.state, lm.batch, lm.key)
  assert jax.tree.structure(state) == jax.tree.structure(lm.state)


def test_measures_one_step_in_a_child_process(tmp_path, capsys):
  """The one real measurement: the autodiff variant (impl="scan") through the whole driver."""
  out = tmp_path / "bench.json"
  timing = ["--warmup", "0", "--steps", "1", "--repeats", "1"]
  bench.main(["--configs", "seed_clf", "--impls", "ours-scan", *timing, "--json", str(out)])
  ((row,),) = [r["results"] for r in json.loads(out.read_text())]
  assert row["ours-scan"]["ms"] > 0 and row["ours-scan"]["devices"] == 1
  assert "| seed_clf | " in capsys.readouterr().out


def test_variant_cost_interleaves_presets_and_divides_by_the_first(monkeypatch, capsys):
  variant_cost = _load("variant_cost")
  calls = []

  def fake_measure(config, presets, windows, steps):
    calls.append((config, presets, windows, steps))
    return {"zaremba": [0.010, 0.012, 0.011], "zoneout": [0.013, 0.0132, 0.5]}

  monkeypatch.setattr(variant_cost, "measure", fake_measure)
  variant_cost.main(["--presets", "zaremba", "zoneout", "--windows", "3", "--steps", "2"])
  out = capsys.readouterr().out
  assert calls == [("seed_clf", ["zaremba", "zoneout"], 3, 2)]
  assert "| zaremba | 11.000 | 1.000x |" in out
  assert "| zoneout | 13.200 | 1.200x |" in out  # the median, not the mean, of the windows


def test_variant_cost_measures_real_steps_of_each_preset():
  times = _load("variant_cost").measure("seed_clf", ["none", "zoneout"], windows=2, steps=1)
  assert {p: len(t) for p, t in times.items()} == {"none": 2, "zoneout": 2}
  assert all(t > 0 for ts in times.values() for t in ts)


def test_bench_cores_times_both_layouts_and_refuses_a_bad_runs_at_once(monkeypatch, capsys):
  """scripts/bench_cores.py: the one-device layout takes --one-device-runs-at-once, the
  default layout no flags; a value below 1 is one line, before anything runs."""
  cores = _load("bench_cores")
  calls = []

  def fake(layout, out, extra):
    calls.append(layout)
    out.mkdir(parents=True)
    (out / "overfit.csv").write_text("same\n")
    return 60.0 if "--cpu-devices" in layout else 30.0

  monkeypatch.setattr(cores, "run_once", fake)
  cores.main(["--one-device-runs-at-once", "85", "--epochs", "2"])
  assert calls == [["--cpu-devices", "1", "--runs-at-once", "85"], []]
  out = capsys.readouterr().out
  assert "| 1 device, 85 runs at once | 1.00 | 1.00x |" in out and "| 2.00x |" in out
  assert "tables identical across layouts: yes" in out
  calls.clear()
  with pytest.raises(SystemExit):
    cores.main(["--one-device-runs-at-once", "0"])
  assert "--one-device-runs-at-once must be >= 1" in capsys.readouterr().err and not calls
