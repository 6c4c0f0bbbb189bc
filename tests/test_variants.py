"""The in-cell dropout variants (zoneout, Semeniuta, RNNDrop) against a plain reference.

The reference below is written apart from the library: a Python loop over
time with the masks as explicit arrays and the textbook LSTM equations. The
fused path (hand-written backward pass) and the scan path (autodiff) must
match it, values and gradients, with padded sequences.
"""

import difflib
import itertools
import re

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest

from lstmdrop_jax import DropoutConfig, LSTMStack, fused, layer, lstm, placements
from lstmdrop_jax import dropout as dr
from lstmdrop_jax.lstm import LSTMLayer
from tests.helpers import record_masks

T, B, F, H = 9, 4, 3, 5
LENGTHS = jnp.array([9, 5, 0, 2])


def reference(params, x_TBF, h0, c0, valid_TB, masks):
  """The LSTM with every variant, one explicit step at a time.

  masks: ``s`` [B, H] recurrent scale, ``u`` [T, B, H] Semeniuta scale, ``k``/``r``
  [B, H] RNNDrop keep and output scale, ``zh``/``zc`` [T, B, H] zoneout
  keep-previous weights; absent means off.
  """
  W, U, b = params["kernel_ih"], params["kernel_hh"], params["bias"]
  one = jnp.ones((B, H))
  h, c, ys = h0, c0, []
  for t in range(x_TBF.shape[0]):
    z = x_TBF[t] @ W + b + (h * masks.get("s", one)) @ U
    i, f = jax.nn.sigmoid(z[:, :H]), jax.nn.sigmoid(z[:, H : 2 * H])
    g, o = jnp.tanh(z[:, 2 * H : 3 * H]), jax.nn.sigmoid(z[:, 3 * H :])
    g = g * (masks["u"][t] if "u" in masks else 1.0)
    c_cand = masks.get("k", one) * (f * c + i * g)
    h_cand = masks.get("r", one) * o * jnp.tanh(c_cand)
    zc = masks["zc"][t] if "zc" in masks else 0.0
    zh = masks["zh"][t] if "zh" in masks else 0.0
    c_new, h_new = zc * c + (1 - zc) * c_cand, zh * h + (1 - zh) * h_cand
    v = valid_TB[t][:, None]
    h, c = jnp.where(v, h_new, h), jnp.where(v, c_new, c)
    ys.append(jnp.where(v, h_new, 0.0))
  return (h, c), jnp.stack(ys)


def _masks(variants, seed=0, p=0.3):
  k = jax.random.split(jax.random.key(seed), 6)
  keep = lambda key, shape: jax.random.bernoulli(key, 1 - p, shape).astype(jnp.float32)
  out = {}
  if "recurrent" in variants:
    out["s"] = keep(k[0], (B, H)) / (1 - p)
  if "semeniuta" in variants:
    out["u"] = keep(k[1], (T, B, H)) / (1 - p)
  if "semeniuta_locked" in variants:
    out["u"] = jnp.broadcast_to(keep(k[1], (B, H)) / (1 - p), (T, B, H))
  if "rnndrop" in variants:
    out["k"] = keep(k[2], (B, H))
    out["r"] = out["k"] / (1 - p)
  if "zoneout_h" in variants:
    out["zh"] = jax.random.bernoulli(k[3], p, (T, B, H)).astype(jnp.float32)
  if "zoneout_c" in variants:
    out["zc"] = jax.random.bernoulli(k[4], p, (T, B, H)).astype(jnp.float32)
  return out


def _layer_args(masks):
  """The reference's masks as ``LSTMLayer``'s arguments."""
  cell = {}
  if "u" in masks:
    locked = bool(jnp.all(masks["u"] == masks["u"][:1]))
    cell["semeniuta"] = masks["u"][0] if locked else masks["u"]
  if "k" in masks:
    cell.update(rnndrop_keep=masks["k"], rnndrop_scale=masks["r"])
  if "zh" in masks:
    cell["zoneout_h"] = masks["zh"]
  if "zc" in masks:
    cell["zoneout_c"] = masks["zc"]
  return {"recurrent_scale_BH": masks.get("s"), "cell": cell or None}


VARIANTS = [
  ("zoneout_h",),
  ("zoneout_c",),
  ("zoneout_h", "zoneout_c"),
  ("semeniuta",),
  ("semeniuta_locked",),
  ("rnndrop",),
  ("recurrent", "semeniuta", "rnndrop", "zoneout_h", "zoneout_c"),
]


@pytest.mark.parametrize("impl", ["fused", "scan"])
@pytest.mark.parametrize("variants", VARIANTS, ids="+".join)
def test_values_and_gradients_match_the_reference(impl, variants):
  x = jax.random.normal(jax.random.key(1), (T, B, F))
  h0, c0 = jax.random.normal(jax.random.key(2), (2, B, H))
  valid = jnp.arange(T)[:, None] < LENGTHS[None]
  masks = _masks(variants)
  layer = LSTMLayer(hidden=H, impl=impl, unroll=2)
  params = layer.init(jax.random.key(3), x, (h0, c0))["params"]
  dys = jax.random.normal(jax.random.key(4), (T, B, H))

  def loss(run, params, x, h0, c0):
    (h, c), ys = run(params, x, h0, c0)
    return jnp.sum(ys * dys) + jnp.sum(1.3 * h) + jnp.sum(0.7 * c)

  ours = lambda p, x, h0, c0: layer.apply(
    {"params": p}, x, (h0, c0), valid_TB=valid, return_carry=True, **_layer_args(masks)
  )
  ref = lambda p, x, h0, c0: reference(p, x, h0, c0, valid, masks)
  v1, g1 = jax.value_and_grad(lambda *a: loss(ours, *a), (0, 1, 2, 3))(params, x, h0, c0)
  v2, g2 = jax.value_and_grad(lambda *a: loss(ref, *a), (0, 1, 2, 3))(params, x, h0, c0)
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5), g1, g2)
  # A variant that is on changes the function (the comparison is not vacuous).
  plain = lambda p, x, h0, c0: reference(p, x, h0, c0, valid, {})
  assert not np.allclose(loss(plain, params, x, h0, c0), v2)


def test_gradients_match_finite_differences_in_float64():
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(1), (T, B, F), jnp.float64)
    h0, c0 = (a.astype(jnp.float64) for a in jax.random.normal(jax.random.key(2), (2, B, H)))
    valid = jnp.arange(T)[:, None] < LENGTHS[None]
    masks = jax.tree.map(lambda a: a.astype(jnp.float64), _masks(VARIANTS[-1]))
    layer = LSTMLayer(hidden=H, compute_dtype=jnp.float64, unroll=1)
    params = jax.tree.map(
      lambda a: a.astype(jnp.float64), layer.init(jax.random.key(3), x, (h0, c0))["params"]
    )

    def loss(params, x, h0, c0):
      (h, c), ys = layer.apply(
        {"params": params}, x, (h0, c0), valid_TB=valid, return_carry=True, **_layer_args(masks)
      )
      return jnp.sum(ys**2) + jnp.sum(h) + jnp.sum(c**2)

    jax.test_util.check_grads(
      loss, (params, x, h0, c0), order=1, modes=["rev"], atol=1e-7, rtol=1e-7
    )


def _drawn(monkeypatch, cfg):
  """The masks an ``LSTMStack`` forward pass draws, by kind."""
  stack = LSTMStack(hidden=64, layers=1, dropout=cfg)
  x = jnp.ones((32, 50, 4))
  v = stack.init(jax.random.key(0), x)
  with monkeypatch.context() as m:
    drawn = {"keep": record_masks(m, "keep_mask16"), "zone": record_masks(m, "zone_mask")}
    stack.apply(v, x, train=True, rngs={"dropout": jax.random.key(5)})
  return drawn


def test_mask_statistics_and_time_locking(monkeypatch):
  n = 50 * 32 * 64
  zone = _drawn(monkeypatch, DropoutConfig(zoneout_h=0.3, zoneout_c=0.1))["zone"]
  assert [m.shape for m in zone] == [(50, 32, 64)] * 2
  for m, p in zip(zone, (0.3, 0.1), strict=True):  # the keep-previous fraction is the rate
    assert abs(m.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    for axis in range(3):  # neighbours in time, batch and unit are independent
      a, b = np.moveaxis(m, axis, 0)[1:], np.moveaxis(m, axis, 0)[:-1]
      assert abs((a & b).mean() - p * p) < 5 * np.sqrt(p * p * (1 - p * p) / a.size)
  both = zone[0] & zone[1]  # h's and c's masks are independent of each other
  assert abs(both.mean() - 0.03) < 5 * np.sqrt(0.03 * 0.97 / n)
  (per_step,) = _drawn(monkeypatch, DropoutConfig(semeniuta=0.4))["keep"]
  assert per_step.shape == (50, 32, 64)
  assert abs((1 - per_step.mean()) - 0.4) < 5 * np.sqrt(0.24 / n)
  (locked,) = _drawn(monkeypatch, DropoutConfig(semeniuta=0.4, time_locked=["semeniuta"]))["keep"]
  assert locked.shape == (1, 32, 64)  # one mask per sequence, the same at every step
  (cell,) = _drawn(monkeypatch, DropoutConfig(rnndrop=0.25))["keep"]
  assert cell.shape == (32, 64)  # RNNDrop: always one mask per sequence
  assert abs((1 - cell.mean()) - 0.25) < 5 * np.sqrt(0.25 * 0.75 / cell.size)


STACK_CONFIGS = {
  "recurrent": DropoutConfig(recurrent=0.3),
  "semeniuta": DropoutConfig(semeniuta=0.3),
  "semeniuta_locked": DropoutConfig(semeniuta=0.3, time_locked=["semeniuta"]),
  "rnndrop": DropoutConfig(rnndrop=0.3),
  "zoneout": DropoutConfig(zoneout_h=0.3, zoneout_c=0.2),
}


@pytest.mark.parametrize("name", STACK_CONFIGS)
def test_the_stack_scales_the_masks_it_draws_as_the_reference_does(monkeypatch, name):
  """``LSTMStack`` draws each variant's masks and turns them into the cell's arguments
  (keep masks scaled by 1 / (1 - p), a locked mask repeated over time); with the masks it
  drew, the reference computes the same sequence."""
  cfg = STACK_CONFIGS[name]
  x = jax.random.normal(jax.random.key(1), (B, T, F))
  stack = LSTMStack(hidden=H, dropout=cfg)
  v = stack.init(jax.random.key(0), x)
  with monkeypatch.context() as m:
    keep = record_masks(m, "keep_mask16")
    zone = record_masks(m, "zone_mask")
    y = stack.apply(v, x, train=True, rngs={"dropout": jax.random.key(5)})
  keep = [a.astype(np.float32) for a in keep]
  masks = {}
  if name == "recurrent":
    masks["s"] = keep[0] / 0.7
  elif name.startswith("semeniuta"):
    masks["u"] = np.broadcast_to(keep[0], (T, B, H)) / 0.7  # locked: [1, B, H]
  elif name == "rnndrop":
    masks["k"], masks["r"] = keep[0], keep[0] / 0.7
  else:
    masks["zh"], masks["zc"] = (z.astype(np.float32) for z in zone)
  assert len(keep) + len(zone) == len(masks) - (name == "rnndrop")  # each drawn mask used
  h0 = jnp.zeros((B, H))
  p = v["params"]["layer_0"]
  _, want = reference(p, jnp.swapaxes(x, 0, 1), h0, h0, jnp.ones((T, B), bool), masks)
  np.testing.assert_allclose(y, jnp.swapaxes(want, 0, 1), rtol=1e-5, atol=1e-6)
  assert not np.allclose(y, LSTMStack(hidden=H).apply(v, x))  # the variant acts


def test_zoneout_uses_its_expectation_at_evaluation(monkeypatch):
  x = jax.random.normal(jax.random.key(1), (B, T, F))
  cfg = DropoutConfig(zoneout_h=0.2, zoneout_c=0.4)
  stack = LSTMStack(hidden=H, dropout=cfg)
  v = stack.init(jax.random.key(0), x)
  y = stack.apply(v, x)  # train=False: no key, no randomness
  masks = {"zh": jnp.full((T, B, H), 0.2), "zc": jnp.full((T, B, H), 0.4)}
  p = v["params"]["layer_0"]
  h0 = jnp.zeros((B, H))
  _, want = reference(p, jnp.swapaxes(x, 0, 1), h0, h0, jnp.ones((T, B), bool), masks)
  np.testing.assert_allclose(y, jnp.swapaxes(want, 0, 1), rtol=1e-5, atol=1e-6)
  y_plain = LSTMStack(hidden=H).apply(v, x)
  assert not np.allclose(y, y_plain)
  # The other variants are the identity at evaluation.
  other = LSTMStack(hidden=H, dropout=DropoutConfig(semeniuta=0.5, rnndrop=0.5, recurrent=0.5))
  np.testing.assert_array_equal(other.apply(v, x), y_plain)


def test_every_variant_trains_vmapped_and_padded():
  """Traced rates (vmap over runs) and variable lengths through the whole model."""
  from lstmdrop_jax import SequenceClassifier, optim, steps

  model = SequenceClassifier(hidden=H, layers=2, unroll=1, dropout=DropoutConfig(
    zoneout_h=0.1, zoneout_c=0.1, semeniuta=0.2, rnndrop=0.1, recurrent=0.1,
    time_locked=["semeniuta"],
  ))  # fmt: skip
  tx = optim.make_optimizer("adam", 1e-2)
  x = jax.random.normal(jax.random.key(0), (B, T, F))
  batch = {"x": x, "y": jnp.arange(B) % 2, "mask": jnp.ones(B, bool), "lengths": LENGTHS + 1}
  states = jax.vmap(lambda k: steps.create_train_state(model, tx, k, x, steps.CLASSIFIER))(
    jax.random.split(jax.random.key(1), 3)
  )
  states = states.replace(
    dropout=jax.tree.map(lambda r: r * jnp.array([0.0, 1.0, 2.0]), states.dropout)
  )
  step = jax.jit(jax.vmap(steps.make_train_step(model, tx, steps.CLASSIFIER), (0, None, 0)))
  new, m = step(states, batch, jax.random.split(jax.random.key(2), 3))
  assert np.isfinite(np.asarray(m["loss_sum"])).all()
  changed = jax.tree.map(lambda a, b: bool(jnp.all(jnp.any(a != b, axis=tuple(range(1, a.ndim))))),
                         states.params, new.params)  # fmt: skip
  assert all(jax.tree.leaves(changed))


def _plain_step(h, c, xw_BG, valid_B, kernel_hh, scale_BH, cdt, cell_t=None):
  """A plain LSTM step, written without any in-cell variant: ``fused._step``'s signature
  and operations (``cell_t`` is never read)."""
  h_in = fused._recurrent_input(h, scale_BH)
  z = xw_BG + fused._recurrent_matmul(h_in.astype(cdt), kernel_hh, xw_BG.dtype)
  act = fused.gate_activations(z)
  i, f, g, o = jnp.split(act, 4, axis=-1)
  c_new = f * c + i * g
  h_new = o * jnp.tanh(c_new)
  if valid_B is None:
    return h_new, c_new, h_new, act, c_new
  v = valid_B[:, None]
  return jnp.where(v, h_new, h), jnp.where(v, c_new, c), jnp.where(v, h_new, 0.0), act, c_new


def _plain_coefficients(act, cs, c0, cands, per_step, invariant):
  """The plain LSTM's backward coefficients (``fused._coefficients`` without masks)."""
  i, f, g, o = jnp.split(act, 4, axis=-1)
  c_prev = fused._shift_in(c0, cs)
  tc = jnp.tanh(cs)
  k_c = o * (1.0 - tc * tc)
  coef = jnp.concatenate(
    [g * i * (1.0 - i), c_prev * f * (1.0 - f), i * (1.0 - g * g), tc * o * (1.0 - o)], -1
  )
  return k_c, coef, f


def _no_variant_code(*args):
  raise AssertionError("the plain LSTM reached in-cell variant code")


def _without_cell_variants(m):
  """Patches the library into code with no in-cell variant support: the recurrence gets
  no ``cell``, the step and the backward coefficients are a plain LSTM's, and the
  variants' helpers fail if reached."""
  fused_layer = layer._fused
  m.setattr(
    layer, "_fused", lambda xw, k, carry, v, s, cell, u: fused_layer(xw, k, carry, v, s, None, u)
  )
  m.setattr(fused, "_split_cell", lambda cell: ({}, {}))
  m.setattr(fused, "_step", _plain_step)
  m.setattr(fused, "_coefficients", _plain_coefficients)
  m.setattr(fused, "_mix", _no_variant_code)
  m.setattr(fused, "_split_by", _no_variant_code)


def _step_text(cfg, impl):
  """The lowered text of a jitted ``SequenceClassifier`` training step with ``cfg``."""
  from lstmdrop_jax import SequenceClassifier, optim, steps

  model = SequenceClassifier(hidden=8, layers=2, unroll=1, impl=impl, dropout=cfg)
  tx = optim.make_optimizer("adam", 1e-3)
  x = jnp.ones((4, 6, 3))
  batch = {
    "x": x,
    "y": jnp.zeros(4, jnp.int32),
    "mask": jnp.ones(4, bool),
    "lengths": jnp.array([6, 3, 6, 1]),
  }
  state = steps.create_train_state(model, tx, jax.random.key(0), x, steps.CLASSIFIER)
  step = steps.make_train_step(model, tx, steps.CLASSIFIER)
  return jax.jit(step).lower(state, batch, jax.random.key(1)).as_text()


def _first_difference(ours: str, plain: str) -> str:
  """The lines around the first line where two lowered programs differ other than in the
  names of their values."""
  a, b = ours.splitlines(), plain.splitlines()
  unnamed = lambda line: re.sub(r"%[\w#]+", "%", line or "")
  pairs = enumerate(itertools.zip_longest(a, b))
  i = next((i for i, (x, y) in pairs if unnamed(x) != unnamed(y)), 0)
  diff = difflib.unified_diff(b[max(i - 2, 0) : i + 6], a[max(i - 2, 0) : i + 6], "plain", "ours")
  return f"the step differs from the plain LSTM's at line {i + 1}:\n" + "\n".join(diff)


#: The placements whose masks act inside the cell (``fused.py``'s ``cell``).
CELL_PLACEMENTS = ("zoneout_h", "zoneout_c", "semeniuta", "rnndrop")


@pytest.mark.parametrize("impl", ["fused", "scan"])
def test_a_variant_switched_off_compiles_to_the_step_of_code_without_variants(monkeypatch, impl):
  """With every in-cell variant at rate 0 (and input, between, output, recurrent and
  weight dropout on), the training step lowers to the same program as the library
  patched into a plain LSTM that has no in-cell variant code at all."""
  off = DropoutConfig(
    0.2, 0.2, 0.2, recurrent=0.1, weight=0.1, **dict.fromkeys(CELL_PLACEMENTS, 0.0)
  )
  with monkeypatch.context() as m:
    _without_cell_variants(m)
    plain = _step_text(off, impl)
  ours = _step_text(off, impl)
  assert ours == plain, _first_difference(ours, plain)
  # The comparison sees each variant: switched on, its code is in the step.
  for name in CELL_PLACEMENTS:
    assert _step_text(off.replace(**{name: 0.1}), impl) != plain, name


def test_forward_mode_needs_the_scan_path_and_gets_it():
  x = jax.random.normal(jax.random.key(0), (2, 5, 3))
  fused_stack = LSTMStack(hidden=4, dropout=DropoutConfig(zoneout_h=0.2))
  v = fused_stack.init(jax.random.key(1), x)
  f = lambda s: lambda x: jnp.sum(s.apply(v, x) ** 2)
  for forward in (lambda g: jax.jvp(g, (x,), (x,)), lambda g: jax.jacfwd(g)(x)):
    with pytest.raises(TypeError, match=r"forward-mode autodiff .* needs impl='scan'"):
      forward(f(fused_stack))
  scan = f(fused_stack.clone(impl="scan"))
  np.testing.assert_allclose(jax.jacfwd(scan)(x), jax.grad(f(fused_stack))(x), rtol=1e-5, atol=1e-6)
  # Forward over reverse works on both paths (the hand-written backward pass is
  # itself differentiable), so the Hessians agree.
  n = x.size
  hess = jax.hessian(scan)(x).reshape(n, n)
  np.testing.assert_allclose(
    jax.hessian(f(fused_stack))(x).reshape(n, n), hess, rtol=1e-4, atol=1e-5
  )
  np.testing.assert_allclose(hess, hess.T, atol=1e-5)


def test_registry_pins_the_masks_of_every_older_placement(monkeypatch):
  """Adding a placement must never change the masks (and so the runs) of existing ones."""
  import hashlib

  from lstmdrop_jax import LanguageModel

  def digests(model, x):
    v = model.init(jax.random.key(0), x)
    with monkeypatch.context() as m:
      drawn = record_masks(m)
      model.apply(v, x, train=True, rngs={"dropout": jax.random.key(42)})
    return {hashlib.sha256(np.packbits(a).tobytes() + str(a.shape).encode()).hexdigest()[:12]
            for a in drawn}  # fmt: skip

  x = jnp.ones((4, 6, 3))
  per_step = DropoutConfig(0.3, 0.3, 0.3, recurrent=0.3, weight=0.3)
  assert digests(LSTMStack(hidden=5, layers=2, dropout=per_step), x) == {
    "687d10ceec6c", "7643e954d5b1", "977b12eda5c1", "b34956a74fa7", "ce90b6d6a56b",
    "cf094c303602", "ed775905c7d2",
  }  # fmt: skip
  locked = per_step.replace(time_locked=True)
  assert digests(LSTMStack(hidden=5, layers=2, dropout=locked), x) == {
    "62adab82a181", "7643e954d5b1", "977b12eda5c1", "b34956a74fa7", "bfeab182d258",
    "ed775905c7d2", "feb71722c3b8",
  }  # fmt: skip
  lm = LanguageModel(
    vocab_size=11, hidden=5, layers=2, dropout=DropoutConfig(0.3, 0.3, 0.3, embedding=0.3)
  )
  assert digests(lm, jnp.ones((4, 6), jnp.int32)) == {
    "4669bbfa172f", "72358f34bcb7", "820dfba1ec83", "bdaa2228ef36",
  }  # fmt: skip
  assert dr.MASK_STREAMS == {
    "input": 0, "between": 1, "output": 2, "recurrent": 3, "weight": 4, "embedding": 5,
    "zoneout_h": 6, "zoneout_c": 7, "semeniuta": 8, "rnndrop": 9,
  }  # fmt: skip


def test_the_cell_placements_fill_exactly_the_cell_variants():
  """Each placement of the registry on its own, at training and at evaluation: the
  ``cell`` entries the stack gives a layer are named after it, only ``CELL_PLACEMENTS``
  give any, and together they are ``fused.CELL_VARIANTS`` (which the recurrence takes)."""
  filled, fillers = set(), set()
  for p in placements.REGISTRY:
    for key in (jax.random.key(0), None):
      given = lstm._layer_masks(DropoutConfig(**{p.name: 0.3}), key, 0, (T, B, H), jnp.float32)
      names = set(given["cell"] or ())
      assert all(n.startswith(p.name) for n in names), (p.name, names)
      filled |= names
      fillers |= {p.name} if names else set()
  assert fillers == set(CELL_PLACEMENTS)
  assert filled == set(fused.CELL_VARIANTS), "the stack's cell entries vs. fused.CELL_VARIANTS"
  assert len(fused.CELL_VARIANTS) == len(filled)
