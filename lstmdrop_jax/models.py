"""Models on an ``LSTMStack``: a sequence classifier and a language model."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Initializer

from lstmdrop_jax import losses, masks
from lstmdrop_jax.lstm import Carry, LSTMStack, symmetric_uniform
from lstmdrop_jax.placements import DropoutConfig, is_off

Array = jax.Array


class _OnStack(nn.Module, kw_only=True):
  """The attributes of a model built on one ``LSTMStack`` (keyword-only)."""

  hidden: int = 64
  layers: int = 1
  dropout: DropoutConfig = DropoutConfig()
  unroll: int | None = None
  compute_dtype: Any = jnp.float32
  forget_bias: float = 1.0
  impl: str = "fused"

  def _lstm(self, **inits: Initializer) -> LSTMStack:
    """The model's stack, named ``lstm`` (``inits``: its initializers, if not the defaults)."""
    return LSTMStack(
      hidden=self.hidden,
      layers=self.layers,
      dropout=self.dropout,
      unroll=self.unroll,
      compute_dtype=self.compute_dtype,
      forget_bias=self.forget_bias,
      impl=self.impl,
      name="lstm",
      **inits,
    )


class SequenceClassifier(_OnStack, kw_only=True):
  """LSTM stack, dropout on its last output, and a dense head.

  The seed's model: ``[Dropout] -> LSTM -> [Dropout] -> LSTM -> [Dropout] ->
  Dense``, with dropout rates from ``dropout`` (``input``, ``between``,
  ``output``, and the extensions ``recurrent`` and ``weight``).

  ``model.apply(variables, x_BTF, lengths=None, train=False)`` returns logits:
  ``[B]`` (one sigmoid logit) when ``num_classes == 2``, else ``[B, K]``
  (softmax logits), float32. The head reads the last valid step of each
  sequence (``lengths - 1``, or ``T - 1`` without lengths). ``train=True``
  applies dropout and needs ``rngs={'dropout': key}``.

  Attributes (keyword-only):
    num_classes: 2 for a binary problem (one logit), or K > 2.
    hidden, layers, dropout, unroll, compute_dtype, forget_bias, impl: as in
      ``LSTMStack`` (defaults: 64 units, 1 layer, forget bias 1).
  """

  num_classes: int = 2

  def __post_init__(self):
    if not isinstance(self.num_classes, int) or self.num_classes < 2:
      raise ValueError(f"num_classes must be an int >= 2, got {self.num_classes!r}")
    lm_only = self.dropout.lm_only_on()
    if lm_only:
      raise ValueError(
        f"{', '.join(lm_only)} dropout (whole words) applies to LanguageModel only; "
        "for a SequenceClassifier use DropoutConfig.input on the features"
      )
    super().__post_init__()

  @nn.compact
  def __call__(self, x_BTF: Array, *, lengths: Array | None = None, train: bool = False) -> Array:
    h_BH = self._lstm()(x_BTF, lengths=lengths, train=train, return_sequences=False)
    binary = self.num_classes == 2
    logits = nn.Dense(1 if binary else self.num_classes, name="head")(h_BH)
    return logits[:, 0] if binary else logits


class LanguageModel(_OnStack, kw_only=True):
  """Word-level LSTM language model (Zaremba et al., 2014 and successors).

  ``logits_BTV, carry = model.apply(variables, tokens_BT, carry=None,
  train=False)``: ``tokens_BT`` int ids in ``[0, vocab_size)``; logits float32.
  Pass the returned carry to the next call to continue the streams
  (truncated BPTT); ``None`` starts from zeros. ``train=True`` applies
  dropout and needs ``rngs={'dropout': key}``: ``embedding`` drops whole
  words, ``input`` acts on the embeddings, ``between`` between layers and
  ``output`` before the softmax.

  Attributes (keyword-only):
    vocab_size: V.
    hidden, layers, dropout, unroll, compute_dtype, forget_bias, impl: as in
      ``LSTMStack`` (defaults: 200 units, 2 layers, forget bias 0 as in
      Zaremba et al.).
    embed_dim: embedding size (defaults to ``hidden``).
    tie_weights: use the embedding matrix, transposed, as the softmax kernel
      (Press & Wolf, 2017; needs ``embed_dim == hidden``); the softmax keeps a
      bias of its own (``head_bias``, zeros at the start), as PyTorch's
      word-language-model example's tied ``nn.Linear`` does.
    init_scale: if set, every parameter (but a tied softmax's bias) is drawn
      from U(-s, s) as in Zaremba et al.; otherwise the library defaults.
    head_block_rows: with targets, under differentiation, the softmax's loss and
      gradient are computed this many rows of ``[B*T]`` at a time
      (``losses.softmax_xent_sum``), never holding all ``[B*T, V]`` logits; None:
      all rows at once.

  With ``targets_BT`` (and optionally ``weights_BT``, one weight per token),
  ``model.apply`` returns ``(loss_sum, carry)`` instead of the logits: the summed
  (weighted) negative log-likelihood of the targets.
  """

  vocab_size: int
  hidden: int = 200
  layers: int = 2
  forget_bias: float = 0.0
  embed_dim: int | None = None
  tie_weights: bool = False
  init_scale: float | None = None
  head_block_rows: int | None = None

  def __post_init__(self):
    if not isinstance(self.vocab_size, int) or self.vocab_size < 1:
      raise ValueError(f"vocab_size must be a positive int, got {self.vocab_size!r}")
    if self.head_block_rows is not None and (
      not isinstance(self.head_block_rows, int) or self.head_block_rows < 1
    ):
      raise ValueError(f"head_block_rows must be >= 1 or None, got {self.head_block_rows!r}")
    embed_dim = self.hidden if self.embed_dim is None else self.embed_dim
    if self.tie_weights and embed_dim != self.hidden:
      raise ValueError(
        f"tie_weights needs embed_dim == hidden, got embed_dim={embed_dim} and hidden={self.hidden}"
      )
    super().__post_init__()

  def _inits(self) -> dict[str, Initializer]:
    if self.init_scale is None:
      return {}
    u = symmetric_uniform(self.init_scale)
    return {"kernel_init": u, "recurrent_init": u, "bias_init": u}

  def initialize_carry(self, batch_size: int) -> Carry:
    """Zero carry for ``batch_size`` streams."""
    stack = LSTMStack(
      hidden=self.hidden, layers=self.layers, compute_dtype=self.compute_dtype, parent=None
    )
    return stack.initialize_carry(batch_size)

  @nn.compact
  def __call__(
    self,
    tokens_BT: Array,
    *,
    carry: Carry | None = None,
    train: bool = False,
    targets_BT: Array | None = None,
    weights_BT: Array | None = None,
  ) -> tuple[Array, Carry]:
    if tokens_BT.ndim != 2 or not jnp.issubdtype(tokens_BT.dtype, jnp.integer):
      raise ValueError(
        f"LanguageModel expects int token ids of shape [batch, time], got "
        f"{tokens_BT.dtype} of shape {tuple(tokens_BT.shape)}"
      )
    inits = self._inits()
    embed_dim = self.hidden if self.embed_dim is None else self.embed_dim
    embed = nn.Embed(
      self.vocab_size,
      embed_dim,
      embedding_init=inits.get("kernel_init", nn.initializers.normal(1.0)),
      name="embed",
    )
    x_BTE = embed(tokens_BT)
    rate = self.dropout.embedding
    if train and not is_off(rate):
      if not self.has_rng("dropout"):
        raise ValueError(
          "train=True with non-zero dropout needs a PRNG key: call "
          "model.apply(variables, tokens, train=True, rngs={'dropout': key})"
        )
      key = masks.mask_key(self.make_rng("dropout"), "embedding")
      keep_V = masks.keep_mask(key, rate, (self.vocab_size,))
      # Whole-word dropout: a word's row is dropped for the whole batch.
      x_BTE = masks.apply_mask(x_BTE, keep_V[tokens_BT][..., None], rate)
    carry, y_BTH = self._lstm(**self._inits())(x_BTE, carry=carry, train=train, return_carry=True)
    # The softmax layer on the flattened [B*T, H] block: its kernel gradient is
    # then a plain 2-D matmul (on the 3-D block it contracts two dimensions,
    # which XLA's CPU backend runs markedly slower). Batch-major, so a batch
    # sharded over devices stays sharded (unlike the stack's [T, B] blocks,
    # see fused.project_steps).
    B, T, H = y_BTH.shape
    y_NH = y_BTH.reshape(B * T, H)
    if targets_BT is not None:
      return self._loss_sum(embed, y_NH, targets_BT, weights_BT), carry
    if self.tie_weights:
      bias_V = self.param("head_bias", nn.initializers.zeros_init(), (self.vocab_size,))
      logits_NV = embed.attend(y_NH) + bias_V
    else:
      logits_NV = self._head()(y_NH)
    logits = logits_NV.reshape(B, T, self.vocab_size)
    return logits, carry

  def _head(self) -> nn.Dense:
    """The untied softmax layer."""
    dense_inits = {}
    if self.init_scale is not None:
      inits = self._inits()
      dense_inits = {"kernel_init": inits["kernel_init"], "bias_init": inits["bias_init"]}
    return nn.Dense(self.vocab_size, name="head", **dense_inits)

  def _loss_sum(self, embed: nn.Embed, y_NH: Array, targets_BT: Array, weights_BT: Array | None):
    """The summed NLL of ``targets_BT`` under the softmax of ``y_NH`` (``losses``)."""
    if self.tie_weights:
      bias_V = self.param("head_bias", nn.initializers.zeros_init(), (self.vocab_size,))
      kernel_VH = embed.embedding
    else:
      head = self._head()
      if self.is_initializing():
        head(y_NH)  # creates its parameters
      kernel_VH = head.variables["params"]["kernel"].T
      bias_V = head.variables["params"]["bias"]
    targets_N = targets_BT.reshape(-1)
    weights_N = (
      jnp.ones(targets_N.shape, jnp.float32)
      if weights_BT is None
      else weights_BT.reshape(-1).astype(jnp.float32)
    )
    if self.head_block_rows is None:
      return losses.plain_xent_sum(y_NH, kernel_VH, bias_V, targets_N, weights_N)
    return losses.softmax_xent_sum(
      y_NH, kernel_VH, bias_V, targets_N, weights_N, self.head_block_rows
    )
