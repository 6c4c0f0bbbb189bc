"""scripts/bench.py and bench_models.py: options and modes, rounds, failures, the JSON file,
the tables and the profile's report, the kernels picked out of a trace, and the benchmark's steps.

The drivers' tests replace the measuring child (``bench.spawn`` or ``bench.run_child``); two
smoke tests run a real child at the smallest settings and check what it prints and writes,
never a time.
"""

import json
import re
import subprocess

import pytest

from tests.helpers import load_script

bench_models = load_script("scripts/bench_models.py")  # before bench.py, which imports it
bench = load_script("scripts/bench.py")


def _result(ms: float) -> dict:
  """What a measuring child reports."""
  return {"ms": ms, "peak_mb": None, "device": "cpu", "devices": 1}


def _record(**kw) -> dict:
  """A hand-written ``--json`` record: an H200 invocation with a failed torch and 8 seeds."""
  record = {
    "tag": "fp32",
    "device": "NVIDIA H200",
    "dtype": "float32",
    "precision": "default",
    "unroll": None,
    "seeds": 8,
    "shard": None,
    "cpu_devices": None,
    "rounds": 1,
    "dropout": ["zaremba"],
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


def _rows(out: str) -> list[list[str]]:
  """The cells of every row of the Markdown table in ``out``, its header first."""
  lines = [ln for ln in out.splitlines() if ln.startswith("| ") and not ln.startswith("| ---")]
  return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


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
    (["--dropout", "zoneout"], "unrecognized arguments: --dropout zoneout"),  # see variants
    (["variants", "--presets", "dropconnect"], "--presets: invalid choice: 'dropconnect'"),
    (["variants", "--seeds", "2"], "unrecognized arguments: --seeds 2"),
    (["cores", "--timeout", "-1"], "--timeout must be > 0 seconds, got -1"),
    (["cores", "--configs", "seed_clf"], "unrecognized arguments: --configs seed_clf"),
    (["profile", "--top", "0"], "--top must be >= 1, got 0"),
    (["profile", "--impls", "ours"], "unrecognized arguments: --impls ours"),
    (["profile", "--rounds", "2"], "unrecognized arguments: --rounds 2"),
  ],
)
def test_bad_arguments_are_refused_with_their_reason(args, message, capsys):
  with pytest.raises(SystemExit) as stop:
    bench.main(args)
  assert stop.value.code == 2
  assert message in capsys.readouterr().err


@pytest.mark.parametrize("mode", [[], ["steps"], ["variants"], ["profile"], ["cores"]])
def test_every_mode_has_its_help(mode, capsys):
  with pytest.raises(SystemExit) as stop:
    bench.main([*mode, "--help"])
  assert stop.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith(f"usage: bench.py {mode[0] if mode else 'steps'} [-h] [--")
  assert "modes: steps (the default), variants, profile, cores" in out


def test_the_default_tag_names_what_sets_the_invocation_apart():
  args = bench.parse_args(["--impls", "ours", "flax", "--unroll", "4", "--seeds", "8", "--shard"])
  assert args.tag == "float32 ours+flax unroll 4 8 seeds shard ours"
  assert bench.parse_args(["--dtype", "bfloat16", "--impls", "torch"]).tag == "bfloat16 torch"
  assert bench.parse_args(["--tag", "mine"]).tag == "mine"
  variants = bench.parse_args(["variants", "--presets", "zaremba", "zoneout"])
  assert variants.tag == "float32 variants zaremba+zoneout" and variants.configs == ["seed_clf"]
  profile = bench.parse_args(["profile"])
  assert profile.tag == "float32 profile ours" and profile.configs == ["seed_clf"]


def _fake_spawn(monkeypatch, outcomes: dict[str, list]):
  """Replaces the measuring child: ``outcomes[column]`` in call order; returns the calls."""
  calls = []

  def spawn(args, config, column, seeds=1):
    calls.append((config, column, seeds))
    ms = outcomes[column if seeds == 1 else f"{column} x{seeds}"].pop(0)
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
  assert _rows(out) == [
    ["config", "ours", "flax", "tokens/s (ours)", "ours vs flax", "peak MB (ours)"],
    ["seed_clf", "4.000", "7.000", "1,600,000", "1.75x", "n/a"],
  ]


def test_variants_time_each_preset_of_ours_against_the_first(monkeypatch, capsys):
  outcomes = {"ours": [4.0, 4.0], "ours[zoneout]": [4.4, 4.6], "ours[rnndrop]": [5.0, 5.0]}
  calls = _fake_spawn(monkeypatch, outcomes)
  bench.main(["variants", "--presets", "zaremba", "zoneout", "rnndrop", "--rounds", "2"])
  assert [c[1] for c in calls] == ["ours", "ours[zoneout]", "ours[rnndrop]"] * 2
  assert _rows(capsys.readouterr().out) == [
    ["config", "dropout preset", "ms per step", "vs zaremba"],
    ["seed_clf", "zaremba", "4.000", "1.000x"],
    ["seed_clf", "zoneout", "4.500", "1.125x"],
    ["seed_clf", "rnndrop", "5.000", "1.250x"],
  ]
  monkeypatch.undo()  # the real spawn, with a fake child: it measures ours with that preset
  seen = _fake_run(monkeypatch)
  bench.spawn(_spawn_args(dropout=["zaremba", "rnndrop"]), "seed_clf", "ours[rnndrop]")
  assert {k: _job(seen)[k] for k in ("impl", "dropout")} == {"impl": "ours", "dropout": "rnndrop"}


def test_a_failed_measurement_is_reported_and_fails_the_run(monkeypatch, tmp_path, capsys):
  """One failed round fails the implementation; the others and the JSON are still written."""
  _fake_spawn(monkeypatch, {"ours": [3.0, 5.0], "flax": [9.0, None], "ours x4": [6.0]})
  out = tmp_path / "bench.json"
  args = ["--configs", "seed_clf", "--impls", "ours", "flax", "--rounds", "2", "--seeds", "4"]
  with pytest.raises(SystemExit) as stop:
    bench.main([*args, "--json", str(out)])
  assert str(stop.value) == "failed: seed_clf/flax"
  assert _rows(capsys.readouterr().out)[1] == [
    "seed_clf", "4.000", "failed", "6.000", "2.67x", "1,600,000", "n/a", "n/a"
  ]  # fmt: skip
  (record,) = json.loads(out.read_text())
  (row,) = record["results"]
  assert row["flax"] is None and row["ours"]["ms_rounds"] == [3.0, 5.0]
  assert record["measured"] == ["ours", "flax", "ours x4 seeds"]


def test_json_appends_each_invocation(monkeypatch, tmp_path):
  path = tmp_path / "bench.json"
  path.write_text(json.dumps([_record()]))
  _fake_spawn(monkeypatch, {"ours-scan": [12.5]})
  bench.main(
    ["--configs", "wide_clf", "--impls", "ours-scan", "--unroll", "4", "--json", str(path)]
  )
  records = json.loads(path.read_text())
  assert records[0] == _record()
  assert records[1]["tag"] == "float32 ours-scan unroll 4" and records[1]["unroll"] == 4
  assert records[1]["results"][0]["ours-scan"]["ms"] == 12.5


def test_invocation_table_of_a_record_compares_ours_with_each_baseline():
  table = bench.invocation_table(_record())
  assert table.startswith(
    "ms per training step on NVIDIA H200 (float32, unroll default, precision default), "
    "median of 5x20 steps\n\n"
  )
  assert _rows(table) == [
    ["config", "ours", "torch", "ours x8 seeds", "8 seeds vs one", "tokens/s (ours)",
     "ours vs torch", "peak MB (ours)"],
    ["seed_clf", "1.978", "failed", "3.007", "5.26x", "3,235,592", "n/a", "n/a"],
  ]  # fmt: skip


def _spawn_args(**kw):
  args = bench.parse_args(
    ["--precision", "tf32", "--warmup", "0", "--steps", "1", "--timeout", "5"]
  )
  for k, v in kw.items():
    setattr(args, k, v)
  return args


def _fake_run(monkeypatch, stdout='RESULT {"ms": 1.5, "devices": 1}\n', returncode=0, raises=None):
  seen = {}

  def run(cmd, timeout, env, **kw):
    seen.update(cmd=cmd, timeout=timeout, env=env)
    if raises:
      raise raises(cmd, timeout)
    return subprocess.CompletedProcess(cmd, returncode, stdout=stdout, stderr="boom")

  monkeypatch.setattr(bench.subprocess, "run", run)
  return seen


def _job(seen: dict) -> dict:
  """What the parent asked of its measuring child."""
  cmd = seen["cmd"]
  return json.loads(cmd[cmd.index("--single") + 1])


def test_spawn_passes_the_options_and_keeps_freed_memory_in_every_child(monkeypatch):
  from lstmdrop_jax.platform import MALLOC_ENV, NO_MALLOPT_ENV

  monkeypatch.delenv(NO_MALLOPT_ENV, raising=False)
  for var in MALLOC_ENV:
    monkeypatch.delenv(var, raising=False)
  seen = _fake_run(monkeypatch)
  assert bench.spawn(_spawn_args(), "seed_clf", "torch") == {"ms": 1.5, "devices": 1}
  job = _job(seen)
  assert job["precision"] == "tf32" and job["impl"] == "torch" and job["config"] == "seed_clf"
  assert (job["warmup"], job["steps"], job["repeats"]) == (0, 1, 5)
  assert seen["timeout"] == 5 and seen["env"]["JAX_PLATFORMS"] == "cpu"
  assert {k: seen["env"][k] for k in MALLOC_ENV} == MALLOC_ENV
  monkeypatch.setenv(NO_MALLOPT_ENV, "1")  # glibc's defaults, for every implementation
  bench.spawn(_spawn_args(), "seed_clf", "ours")
  assert not set(MALLOC_ENV) & set(seen["env"])


def test_only_a_sharded_implementation_gets_the_devices(monkeypatch):
  seen = _fake_run(monkeypatch)
  args = _spawn_args(shard="ours", cpu_devices=2)
  for column, seeds, devices in [("ours", 1, 2), ("flax", 1, None), ("ours", 4, None)]:
    bench.spawn(args, "seed_clf", column, seeds)
    job = _job(seen)
    assert (job["shard"], job["cpu_devices"], job["seeds"]) == (devices is not None, devices, seeds)


def test_spawn_reports_a_timeout_or_a_crash_as_failed(monkeypatch, capsys):
  _fake_run(monkeypatch, raises=subprocess.TimeoutExpired)
  assert bench.spawn(_spawn_args(), "seed_clf", "ours") is None
  assert "seed_clf/ours: failed: timed out after 5 s" in capsys.readouterr().err
  _fake_run(monkeypatch, stdout="no result line\n")
  assert bench.spawn(_spawn_args(), "seed_clf", "flax") is None
  assert "seed_clf/flax: failed: no RESULT line" in capsys.readouterr().err
  _fake_run(monkeypatch, returncode=1)
  assert bench.spawn(_spawn_args(), "seed_clf", "torch") is None
  assert "seed_clf/torch: failed\nboom" in capsys.readouterr().err


def _fake_overfit(monkeypatch, tables: dict[str, str]):
  """Replaces overfit.py's runs: each writes ``tables[its layout flags]`` (missing: fails)."""
  calls = []

  def run_child(cmd, device, timeout, label):
    out = bench.Path(cmd[cmd.index("--out") + 1])
    layout = " ".join(cmd[cmd.index("--out") + 2 :])
    calls.append(layout)
    if layout not in tables:
      return None
    out.mkdir(parents=True)
    (out / "overfit.csv").write_text(tables[layout])
    return ""

  monkeypatch.setattr(bench, "run_child", run_child)
  return calls


def test_cores_alternates_the_layouts_and_compares_their_tables(monkeypatch, capsys):
  """The one-device layout takes --cpu-devices 1, the default no flags; what follows -- and
  --epochs go to overfit.py."""
  one = "--quick --epochs 2 --cpu-devices 1"
  calls = _fake_overfit(monkeypatch, {one: "same\n", "--quick --epochs 2": "same\n"})
  argv = ["cores", "--rounds", "2", "--epochs", "2"]
  bench.main([*argv, "--", "--quick"])
  assert calls == [one, "--quick --epochs 2"] * 2
  out = capsys.readouterr().out
  assert "median wall time of 2 round(s); tables identical across layouts: yes" in out
  rows = _rows(out)
  assert rows[0] == ["layout", "minutes", "speed-up"]
  assert rows[1][0] == "1 device"
  assert rows[1][2] == "1.00x" and rows[2][0].endswith("devices (default)")
  assert all(r[2].endswith("x") for r in rows[1:])


def test_cores_reports_a_failed_layout_and_differing_tables(monkeypatch, capsys):
  _fake_overfit(monkeypatch, {"--cpu-devices 1": "one\n"})
  with pytest.raises(SystemExit, match=r"failed: \d+ devices \(default\)"):
    bench.main(["cores"])
  out = capsys.readouterr().out
  assert "tables identical across layouts: n/a" in out and _rows(out)[2][1:] == ["failed", "n/a"]
  _fake_overfit(monkeypatch, {"--cpu-devices 1": "one\n", "": "other\n"})
  bench.main(["cores"])
  assert "tables identical across layouts: NO" in capsys.readouterr().out


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


def test_smoke_a_real_child_prints_the_table_and_writes_the_record(tmp_path, capsys):
  """The whole driver with one real measuring child at the smallest settings."""
  out = tmp_path / "bench.json"
  timing = ["--warmup", "0", "--steps", "1", "--repeats", "1"]
  bench.main(["--configs", "seed_clf", "--impls", "ours", *timing, "--json", str(out)])
  header, row = _rows(capsys.readouterr().out)
  assert header == ["config", "ours", "tokens/s (ours)", "peak MB (ours)"]
  assert row[0] == "seed_clf" and row[1] != "failed"
  (record,) = json.loads(out.read_text())
  assert record["impls"] == record["measured"] == ["ours"]
  (result,) = record["results"]
  assert set(result["ours"]) == {"ms", "ms_rounds", "peak_mb", "device", "devices"}
  assert result["ours"]["devices"] == 1


def _meta(pid, name, tid=None):
  e = {"ph": "M", "pid": pid, "name": "thread_name" if tid else "process_name"}
  return dict(e, tid=tid, args={"name": name}) if tid else dict(e, args={"name": name})


def _span(pid, tid, name, dur):
  return {"ph": "X", "pid": pid, "tid": tid, "name": name, "ts": 0, "dur": dur}


def test_a_gpu_trace_keeps_the_streams_and_drops_summary_rows():
  trace = {
    "traceEvents": [
      _meta(1, "/host:CPU"),
      _meta(2, "/device:GPU:0"),
      _meta(2, "Stream #7(Compute)", tid=7),
      _meta(2, "XLA Ops", tid=8),
      _span(1, 1, "PjitFunction(run)", 100),
      _span(2, 7, "gemm_fusion_dot", 5),
      _span(2, 7, "loop_add_fusion", 2),
      _span(2, 8, "fusion.3", 7),  # the op-level summary of the same kernels
    ]
  }
  where, events = bench.kernel_events(trace)
  assert where == "/device:GPU:0"
  assert sorted(e["name"] for e in events) == ["gemm_fusion_dot", "loop_add_fusion"]


def test_a_gpu_trace_without_stream_rows_is_refused_not_misread():
  trace = {
    "traceEvents": [_meta(2, "/device:GPU:0"), _meta(2, "XLA Ops", tid=8), _span(2, 8, "f", 7)]
  }
  with pytest.raises(ValueError, match="no stream rows in the trace of /device:GPU:0"):
    bench.kernel_events(trace)


def test_a_cpu_trace_keeps_the_thunks_not_their_wrappers():
  trace = {
    "traceEvents": [
      _meta(1, "/host:CPU"),
      _span(1, 1, "ThunkExecutor::Execute", 50),
      _span(1, 1, "PjitFunction(run)", 60),
      _span(1, 2, "ynn_fusion.2", 20),
      _span(1, 2, "while.3", 30),
      _span(1, 3, "multiply_tanh_fusion", 4),
    ]
  }
  where, events = bench.kernel_events(trace)
  assert where == "host"
  assert sorted(e["name"] for e in events) == ["multiply_tanh_fusion", "ynn_fusion.2"]


def test_profile_asks_each_child_for_a_trace_and_reports_its_kernels(monkeypatch, capsys):
  """A failed trace is reported and fails the run; the others are printed."""
  kernel = {"name": "gemm", "ms": 0.5, "per_step": 4.0}
  traced = dict(_result(2.0), where="host", kernel_ms=1.5, launches=12.0, top=[kernel])
  monkeypatch.setattr(
    bench, "spawn", lambda args, config, impl: traced if config == "seed_clf" else None
  )
  with pytest.raises(SystemExit, match="failed: wide_clf/ours"):
    bench.main(["profile", "--configs", "seed_clf", "wide_clf"])
  assert capsys.readouterr().out.splitlines() == [
    "",
    "seed_clf (ours, float32) on host: 2.000 ms/step wall, kernels 1.500 ms/step in 12 launches",
    "     0.500 ms  x     4  gemm",
    "",
    "wide_clf (ours, float32): failed",
  ]
  monkeypatch.undo()
  seen = _fake_run(monkeypatch)
  bench.spawn(bench.parse_args(["profile", "--top", "3", "--steps", "2"]), "seed_clf", "ours")
  assert {k: _job(seen)[k] for k in ("top", "steps", "repeats")} == {
    "top": 3,
    "steps": 2,
    "repeats": 1,
  }


def test_smoke_a_real_profile_prints_and_writes_the_top_kernels(tmp_path, capsys):
  """The profile mode with one real child at the smallest settings: one traced step."""
  out = tmp_path / "profile.json"
  args = ["--configs", "seed_clf", "--warmup", "0", "--steps", "1", "--top", "3"]
  bench.main(["profile", *args, "--json", str(out)])
  head, *kernels, appended = capsys.readouterr().out.strip().splitlines()
  number = r"\d+(\.\d+)?"
  assert re.fullmatch(
    rf"seed_clf \(ours, float32\) on host: {number} ms/step wall, kernels {number} ms/step in "
    r"\d+ launches",
    head,
  )
  assert len(kernels) == 3 and all(re.match(rf"\s+{number} ms\s+x\s*\d+\s+\S", k) for k in kernels)
  assert appended == f"appended to {out} as 'float32 profile ours'"
  (record,) = json.loads(out.read_text())
  (r,) = record["results"]
  assert set(r["ours"]) == {
    "ms", "ms_rounds", "where", "kernel_ms", "launches", "top", "peak_mb", "device", "devices"
  }  # fmt: skip
  assert r["ours"]["where"] == "host"
  assert [set(k) for k in r["ours"]["top"]] == [{"name", "ms", "per_step"}] * 3
