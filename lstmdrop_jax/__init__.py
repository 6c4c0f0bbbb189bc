"""lstmdrop_jax: LSTMs in JAX/Flax with explicit, PRNG-keyed dropout.

Public API:
  DropoutConfig: rates for the input / between / output placements, plus
    recurrent, weight (DropConnect) and embedding dropout, and time-locked
    (variational) masks.
  LSTMStack: the recurrent core, ``[B, T, F] -> [B, T, H]`` and a carry.
  SequenceClassifier, LanguageModel: models on the stack.
  from_torch_lstm, to_torch_lstm, from_keras_lstm, to_keras_lstm: weight
    converters.

Every module applies dropout only with ``train=True``, and then needs a key:
``model.apply(variables, x, train=True, rngs={'dropout': key})``.
"""

from lstmdrop_jax.convert import from_keras_lstm, from_torch_lstm, to_keras_lstm, to_torch_lstm
from lstmdrop_jax.lstm import LSTMStack
from lstmdrop_jax.models import LanguageModel, SequenceClassifier
from lstmdrop_jax.placements import DropoutConfig

__all__ = [
  "DropoutConfig",
  "LSTMStack",
  "LanguageModel",
  "SequenceClassifier",
  "from_keras_lstm",
  "from_torch_lstm",
  "to_keras_lstm",
  "to_torch_lstm",
]
__version__ = "0.1.0"
