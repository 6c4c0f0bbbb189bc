"""bench.py's models and training steps: one model, three implementations, each trained by
forward + backward + an optimizer update with dropout ``RATE`` at the three placements (input,
between the layers, output). ``ours``: ``SequenceClassifier`` / ``LanguageModel`` and
``steps.make_train_step``; ``ours-scan``: the same with ``impl="scan"`` (the recurrence
differentiated by autodiff); ``flax``: Flax's stock ``nn.RNN(nn.OptimizedLSTMCell)`` layers with
``nn.Dropout``; ``torch``: ``nn.LSTM`` (cuDNN on a GPU) with ``nn.Dropout`` on its input and
output. The frameworks are imported inside the builders, so importing ``CONFIGS`` is free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

#: name: batch B, steps T, input features F or vocabulary V, hidden H, layers L, and the head
#: ("binary": one logit from the last step; "lm": next-token softmax). ``ptb_cpu`` is
#: experiments/ptb_cpu.py's model (PyTorch's word-language-model example): tied softmax, SGD
#: with gradient clipping ("sgd_clip"); the others train by Adam. ``ptb_cpu_blocked`` is the
#: same model whose softmax ours trains in blocks of rows (``blocks``: ``head_block_rows``).
CONFIGS = {
  "seed_clf": dict(B=64, T=100, F=20, H=64, L=2, head="binary"),
  "zaremba_medium": dict(B=20, T=35, V=10_000, H=650, L=2, head="lm"),
  "zaremba_large": dict(B=20, T=35, V=10_000, H=1500, L=2, head="lm"),
  "wide_clf": dict(B=256, T=100, F=20, H=512, L=2, head="binary"),
  "ptb_small": dict(B=20, T=20, V=10_000, H=200, L=2, head="lm"),
  "ptb_cpu": dict(B=20, T=35, V=10_000, H=200, L=2, head="lm", tied=True, opt="sgd_clip"),
  "ptb_cpu_blocked": dict(
    B=20, T=35, V=10_000, H=200, L=2, head="lm", tied=True, opt="sgd_clip", blocks=350
  ),
}
#: The ptb_cpu recipe's SGD in our loss's units (per-token lr 20 and clip 0.25, x35 steps).
SGD_LR, SGD_CLIP = 20.0 / 35, 0.25 * 35
#: What to measure by default: the small models on a CPU, the paper-sized ones on a GPU.
DEFAULT_CONFIGS = {
  "cpu": ["seed_clf", "ptb_small"],
  "gpu": ["seed_clf", "zaremba_medium", "zaremba_large", "wide_clf"],
}
JAX_IMPLS = ("ours", "ours-scan", "flax")
IMPLS = (*JAX_IMPLS, "torch")
RATE = 0.5
_ZAREMBA = dict(input=RATE, between=RATE, output=RATE)
#: Our model's dropout: Zaremba et al.'s three placements (what the others do), or those plus
#: one variant.
DROPOUT_PRESETS = {
  "zaremba": _ZAREMBA,
  "recurrent": dict(_ZAREMBA, recurrent=0.25),
  "weight": dict(_ZAREMBA, weight=0.25),
  "zoneout": dict(_ZAREMBA, zoneout_h=0.1, zoneout_c=0.1),
  "zoneout_h": dict(_ZAREMBA, zoneout_h=0.1),
  "zoneout_c": dict(_ZAREMBA, zoneout_c=0.1),
  "semeniuta": dict(_ZAREMBA, semeniuta=0.25),
  "semeniuta_locked": dict(_ZAREMBA, semeniuta=0.25, time_locked=["semeniuta"]),
  "rnndrop": dict(_ZAREMBA, rnndrop=0.25),
}


def flops_per_step(c: dict) -> float:
  """Matmul FLOPs of one training step (forward + backward = 3x forward)."""
  B, T, H, L = c["B"], c["T"], c["H"], c["L"]
  fin = c.get("F", H)  # the LM's embedding size is H
  lstm = sum(2 * B * T * ((fin if layer == 0 else H) + H) * 4 * H for layer in range(L))
  head = 2 * B * T * H * c["V"] if c["head"] == "lm" else 2 * B * H
  return 3.0 * (lstm + head)


def set_matmul_precision(impl: str, precision: str) -> None:
  """Sets the float32 matmul mode of ``impl``'s framework for this process: ``default`` leaves
  each its own (on NVIDIA GPUs since Ampere XLA and cuDNN's RNN use TF32, PyTorch's other
  matmuls full float32); ``tf32`` or ``highest`` (full float32) make the arithmetic equal."""
  if precision == "default":
    return
  if impl == "torch":
    import torch

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
  else:
    import jax

    mode = "tensorfloat32" if precision == "tf32" else "highest"
    jax.config.update("jax_default_matmul_precision", mode)


# --- JAX ----------------------------------------------------------------------


class JaxStep(NamedTuple):
  """A jitted ``step(state, batch, key) -> (state, metrics)`` that donates its state, and its
  first inputs."""

  step: Callable[..., Any]
  state: Any
  batch: dict
  key: Any


def _jax_batch(c: dict, key) -> dict:
  """A fixed batch: random tokens and their shift for an LM, noise and 0/1 labels otherwise."""
  import jax
  import jax.numpy as jnp

  if c["head"] == "lm":
    x_BT = jax.random.randint(key, (c["B"], c["T"]), 0, c["V"])
    return {"x": x_BT, "y": jnp.roll(x_BT, -1, axis=1)}
  x_BTF = jax.random.normal(key, (c["B"], c["T"], c["F"]))
  return {"x": x_BTF, "y": jnp.arange(c["B"]) % 2, "mask": jnp.ones(c["B"], bool)}


def _ours(c: dict, impl: str, dtype: str, unroll: int | None, tx, x, dropout: str, shard: bool):
  """``init(key) -> state`` and ``run(state, batch, key)`` of our models; ``shard``:
  the library's data-parallel step, run per device on its rows of the batch."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import PartitionSpec as P

  from lstmdrop_jax import DropoutConfig, LanguageModel, SequenceClassifier, steps
  from lstmdrop_jax import parallel as par

  impl, cdt = "scan" if impl == "ours-scan" else "fused", jnp.dtype(dtype)
  common = dict(hidden=c["H"], layers=c["L"], unroll=unroll, compute_dtype=cdt, impl=impl)
  common["dropout"] = DropoutConfig(**DROPOUT_PRESETS[dropout])
  if c["head"] == "lm":
    lm = LanguageModel(
      vocab_size=c["V"], tie_weights=c.get("tied", False), head_block_rows=c.get("blocks"),
      **common,
    )  # fmt: skip
    model, objective = lm, steps.LANGUAGE_MODEL
  else:
    model, objective = SequenceClassifier(**common), steps.CLASSIFIER
  init = lambda k: steps.create_train_state(model, tx, k, x, objective)
  if not shard:
    return init, steps.make_train_step(model, tx, objective)
  run = steps.make_train_step(model, tx, objective, batch_axis=par.AXIS)
  state = steps.sharded_state_spec(c["head"] == "lm", P(par.AXIS))
  specs = dict(in_specs=(state, P(par.AXIS), P()), out_specs=(state, P()))
  return init, jax.shard_map(run, mesh=par.make_mesh(), **specs, check_vma=False)


def _flax_stock(c: dict, dtype: str, unroll: int | None, tx, x):
  """``init`` and ``run`` of the same model from Flax's stock layers, losses as ours."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  lm, cdt = c["head"] == "lm", jnp.dtype(dtype)

  class Stock(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      drop = lambda x: nn.Dropout(RATE, deterministic=not train)(x)
      embed = nn.Embed(c["V"], c["H"]) if lm else None
      x = embed(x) if lm else x
      for _ in range(c["L"]):  # dropout on the input and between the layers
        x = nn.RNN(nn.OptimizedLSTMCell(c["H"], dtype=cdt), unroll=unroll or 1)(drop(x))
      x = drop(x if lm else x[:, -1])
      if c.get("tied"):
        bias = self.param("head_bias", nn.initializers.zeros_init(), (c["V"],))
        return (embed.attend(x) + bias).astype(jnp.float32)
      out = nn.Dense(c["V"] if lm else 1, dtype=cdt)(x)
      return out.astype(jnp.float32) if lm else out[:, 0].astype(jnp.float32)

  model = Stock()

  def init(k):
    params = model.init(k, x, False)["params"]
    return {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}

  def loss_fn(params, batch, k):
    out = model.apply({"params": params}, batch["x"], True, rngs={"dropout": k})
    if lm:
      return optax.softmax_cross_entropy_with_integer_labels(out, batch["y"]).sum() / c["B"]
    return optax.sigmoid_binary_cross_entropy(out, batch["y"].astype(out.dtype)).mean()

  def run(state, batch, k):
    g = jax.grad(loss_fn)(state["params"], batch, jax.random.fold_in(k, state["step"]))
    u, opt = tx.update(g, state["opt"], state["params"])
    new_params = optax.apply_updates(state["params"], u)
    return {"params": new_params, "opt": opt, "step": state["step"] + 1}, {}

  return init, run


def jax_step(
  config: str, impl: str, dtype="float32", unroll=None, seeds=1, shard=False, dropout="zaremba"
) -> JaxStep:
  """Builds ``impl``'s (one of ``JAX_IMPLS``) jitted training step on ``config`` with its
  initial state, its matmuls in ``dtype`` and its scan unrolled by ``unroll`` (None: each
  implementation's default). ``seeds`` K > 1 vmaps K runs (one key each) into one step.
  ``shard`` (ours only, ignored with ``seeds > 1``) runs the library's data-parallel step
  (``shard_map``): the batch split over every device, the state replicated.
  ``dropout``: our model's ``DROPOUT_PRESETS`` entry (the others keep theirs)."""
  import jax
  import jax.numpy as jnp
  import optax

  from lstmdrop_jax import optim

  if impl not in JAX_IMPLS:
    raise ValueError(f"impl must be one of {JAX_IMPLS}, got {impl!r}")

  c, key = CONFIGS[config], jax.random.key(0)
  sgd = c.get("opt") == "sgd_clip"
  tx = optim.make_optimizer("sgd", SGD_LR, clip_norm=SGD_CLIP) if sgd else optax.adam(1e-3)
  batch = _jax_batch(c, key)
  shard = shard and seeds == 1 and impl != "flax"
  if impl == "flax":
    init, run = _flax_stock(c, dtype, unroll, tx, batch["x"])
  else:
    init, run = _ours(c, impl, dtype, unroll, tx, batch["x"], dropout, shard)
  if seeds > 1:
    keys = jax.random.split(key, seeds)
    batch = jax.tree.map(lambda a: jnp.broadcast_to(a, (seeds, *a.shape)), batch)
    return JaxStep(jax.jit(jax.vmap(run), donate_argnums=0), jax.vmap(init)(keys), batch, keys)
  state = init(key)
  if shard:
    from jax.sharding import NamedSharding, PartitionSpec

    from lstmdrop_jax import parallel as par

    mesh = par.make_mesh()
    state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
    batch = jax.device_put(batch, NamedSharding(mesh, PartitionSpec(par.AXIS)))
  return JaxStep(jax.jit(run, donate_argnums=0), state, batch, key)


# --- PyTorch ------------------------------------------------------------------


def torch_step(config: str, dtype: str = "float32", device: str = "cpu") -> Callable[[], None]:
  """PyTorch's training step on ``config``: ``step()`` runs one on a fixed batch, unsynchronised.
  ``dtype="bfloat16"`` runs it under CUDA autocast (on a GPU only; PyTorch has no bf16 cuDNN
  LSTM otherwise)."""
  import torch
  from torch import nn

  c = CONFIGS[config]
  lm = c["head"] == "lm"
  dev = torch.device("cuda" if device == "gpu" else "cpu")
  torch.manual_seed(0)

  class Model(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Embedding(c["V"], c["H"]) if lm else None
      self.drop_in, self.drop_out = nn.Dropout(RATE), nn.Dropout(RATE)
      fin = c["H"] if lm else c["F"]
      self.lstm = nn.LSTM(fin, c["H"], num_layers=c["L"], dropout=RATE, batch_first=True)
      self.head = nn.Linear(c["H"], c["V"] if lm else 1)
      if c.get("tied"):
        self.head.weight = self.embed.weight

    def forward(self, x):
      y, _ = self.lstm(self.drop_in(self.embed(x) if lm else x))
      return self.head(self.drop_out(y if lm else y[:, -1]))

  model = Model().to(dev).train()
  sgd = c.get("opt") == "sgd_clip"
  params = model.parameters()
  opt = torch.optim.SGD(params, lr=SGD_LR) if sgd else torch.optim.Adam(params, lr=1e-3)
  if lm:
    x = torch.randint(0, c["V"], (c["B"], c["T"]), device=dev)
    y_BT = torch.roll(x, -1, 1)

    def loss_fn(out_BTV):
      nll = nn.functional.cross_entropy(out_BTV.flatten(0, 1), y_BT.flatten(), reduction="sum")
      return nll / c["B"]
  else:
    x = torch.randn(c["B"], c["T"], c["F"], device=dev)
    y_B = (torch.arange(c["B"], device=dev) % 2).float()
    loss_fn = lambda out_B1: nn.functional.binary_cross_entropy_with_logits(out_B1[:, 0], y_B)
  autocast = dtype == "bfloat16" and device == "gpu"

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
      loss = loss_fn(model(x))
    loss.backward()
    if sgd:
      torch.nn.utils.clip_grad_norm_(model.parameters(), SGD_CLIP)
    opt.step()

  return step
