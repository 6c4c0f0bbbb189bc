"""Weight import and export: PyTorch ``nn.LSTM`` and Keras ``LSTM`` layouts.

Our layer ``k`` (``params['layer_{k}']`` of an ``LSTMStack``, or
``variables['params']['lstm']['layer_{k}']`` of the models) holds::

  kernel_ih [F, 4H]   kernel_hh [H, 4H]   bias [4H]     gate order i, f, g, o

PyTorch ``nn.LSTM`` (gate order i, f, g, o, two biases)::

  weight_ih_l{k} [4H, F]  = kernel_ih.T
  weight_hh_l{k} [4H, H]  = kernel_hh.T
  bias_ih_l{k} + bias_hh_l{k} [4H] = bias

  Import sums the two biases; export writes ``bias_ih = bias`` and
  ``bias_hh = 0``. The function is identical either way; PyTorch's split of
  the bias into two parts is not identifiable from the function, so a
  PyTorch -> ours -> PyTorch round trip returns the weights bit for bit and
  the bias as that sum.

Keras ``LSTM`` (gate order i, f, c, o, where c is our g; one bias)::

  kernel [F, 4H] = kernel_ih   recurrent_kernel [H, 4H] = kernel_hh
  bias [4H] = bias

  ``CuDNNLSTM`` stores an ``[8H]`` bias (input and recurrent halves); import
  sums the halves. Keras's default activations (tanh, and sigmoid for the
  gates) match ours; the old ``hard_sigmoid`` default of Keras 2 LSTM
  does not, so check ``recurrent_activation`` before importing.

All functions take and return numpy arrays (anything ``np.asarray`` accepts,
torch tensors included) and copy nothing they do not need to.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Params = dict[str, dict[str, np.ndarray]]


def _np(a: Any) -> np.ndarray:
  if hasattr(a, "detach"):  # a torch tensor
    a = a.detach().cpu().numpy()
  return np.asarray(a, dtype=np.float32)


def _check_shape(name: str, a: np.ndarray, want: tuple[int, ...]) -> None:
  if a.shape != want:
    raise ValueError(f"{name} has shape {a.shape}, expected {want}")


def from_torch_lstm(state_dict: Mapping[str, Any]) -> Params:
  """PyTorch ``nn.LSTM`` state dict -> ``LSTMStack`` parameters.

  Args:
    state_dict: ``lstm.state_dict()`` (tensors or numpy arrays) of a
      unidirectional ``nn.LSTM`` with biases and no projection, possibly
      with a common prefix such as ``"lstm."`` on every key.

  Returns:
    ``{'layer_{k}': {'kernel_ih', 'kernel_hh', 'bias'}}`` as float32 numpy.

  Raises:
    ValueError: no LSTM weights found, a bidirectional or projected LSTM, a
      missing bias, inconsistent shapes, or layers whose sizes do not chain
      (layer k's input size must be layer k-1's hidden size).
  """
  by_name: dict[str, Any] = {}
  for key, value in state_dict.items():
    m = re.search(r"(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$", key)
    if m is None:
      continue
    if m.group(3) or m.group(1) == "weight_hr":
      raise ValueError(
        f"{key!r}: bidirectional and projected (proj_size) LSTMs are not supported; "
        "export a unidirectional nn.LSTM without proj_size"
      )
    by_name[f"{m.group(1)}_l{m.group(2)}"] = value
  if "weight_ih_l0" not in by_name:
    raise ValueError(
      "no nn.LSTM weights found: expected keys weight_ih_l0, weight_hh_l0, bias_ih_l0, "
      f"bias_hh_l0, ...; got {sorted(state_dict)[:8]}"
    )
  layers = 1 + max(int(k.rsplit("_l", 1)[1]) for k in by_name)
  params: Params = {}
  for k in range(layers):
    missing = [
      f"{n}_l{k}"
      for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
      if f"{n}_l{k}" not in by_name
    ]
    if missing:
      raise ValueError(f"missing {missing}; nn.LSTM(bias=False) is not supported")
    w_ih, w_hh = _np(by_name[f"weight_ih_l{k}"]), _np(by_name[f"weight_hh_l{k}"])
    G, H = w_hh.shape
    _check_shape(f"weight_hh_l{k}", w_hh, (4 * H, H))
    _check_shape(f"weight_ih_l{k}", w_ih, (4 * H, w_ih.shape[1]))
    b_ih, b_hh = _np(by_name[f"bias_ih_l{k}"]), _np(by_name[f"bias_hh_l{k}"])
    _check_shape(f"bias_ih_l{k}", b_ih, (G,))
    _check_shape(f"bias_hh_l{k}", b_hh, (G,))
    params[f"layer_{k}"] = {
      "kernel_ih": w_ih.T.copy(),
      "kernel_hh": w_hh.T.copy(),
      "bias": b_ih + b_hh,
    }
  return _check_chain(params)


def to_torch_lstm(
  params: Mapping[str, Mapping[str, Any]], prefix: str = ""
) -> dict[str, np.ndarray]:
  """``LSTMStack`` parameters -> PyTorch ``nn.LSTM`` state dict (numpy).

  Load into torch with ``lstm.load_state_dict({k: torch.from_numpy(v) ...})``.
  The whole bias goes to ``bias_ih_l{k}``; ``bias_hh_l{k}`` is zero.

  Args:
    params: ``{'layer_{k}': {'kernel_ih', 'kernel_hh', 'bias'}}``.
    prefix: prepended to every key (e.g. ``"lstm."``).
  """
  out: dict[str, np.ndarray] = {}
  for k in range(_num_layers(params)):
    p = params[f"layer_{k}"]
    bias = _np(p["bias"])
    out[f"{prefix}weight_ih_l{k}"] = _np(p["kernel_ih"]).T.copy()
    out[f"{prefix}weight_hh_l{k}"] = _np(p["kernel_hh"]).T.copy()
    out[f"{prefix}bias_ih_l{k}"] = bias.copy()
    out[f"{prefix}bias_hh_l{k}"] = np.zeros_like(bias)
  return out


def from_keras_lstm(weights: Sequence[Sequence[Any]]) -> Params:
  """Keras ``LSTM`` weights -> ``LSTMStack`` parameters.

  Args:
    weights: one entry per layer, each ``layer.get_weights()``:
      ``[kernel [F, 4H], recurrent_kernel [H, 4H], bias [4H]]`` (or an
      ``[8H]`` ``CuDNNLSTM`` bias, whose halves are summed).

  Returns:
    ``{'layer_{k}': {'kernel_ih', 'kernel_hh', 'bias'}}`` as float32 numpy.

  Raises:
    ValueError: not one list per layer, a missing bias, inconsistent shapes,
      or layers whose sizes do not chain.
  """
  if len(weights) == 0 or (isinstance(weights[0], np.ndarray) and np.ndim(weights[0]) == 2):
    raise ValueError(
      "from_keras_lstm expects a list with one [kernel, recurrent_kernel, bias] "
      "list per layer, e.g. [layer.get_weights() for layer in lstm_layers]"
    )
  params: Params = {}
  for k, layer in enumerate(weights):
    if len(layer) != 3:
      raise ValueError(
        f"layer {k}: expected [kernel, recurrent_kernel, bias], got {len(layer)} arrays "
        "(use_bias=False is not supported)"
      )
    kernel, recurrent, bias = (_np(a) for a in layer)
    H = recurrent.shape[0]
    _check_shape(f"layer {k} recurrent_kernel", recurrent, (H, 4 * H))
    _check_shape(f"layer {k} kernel", kernel, (kernel.shape[0], 4 * H))
    if bias.shape == (8 * H,):  # CuDNNLSTM: input and recurrent biases
      bias = bias[: 4 * H] + bias[4 * H :]
    _check_shape(f"layer {k} bias", bias, (4 * H,))
    params[f"layer_{k}"] = {
      "kernel_ih": kernel.copy(),
      "kernel_hh": recurrent.copy(),
      "bias": bias.copy(),
    }
  return _check_chain(params)


def to_keras_lstm(params: Mapping[str, Mapping[str, Any]]) -> list[list[np.ndarray]]:
  """``LSTMStack`` parameters -> one ``[kernel, recurrent_kernel, bias]`` per layer,
  ready for ``keras_layer.set_weights``."""
  return [
    [_np(p["kernel_ih"]).copy(), _np(p["kernel_hh"]).copy(), _np(p["bias"]).copy()]
    for p in (params[f"layer_{k}"] for k in range(_num_layers(params)))
  ]


def _check_chain(params: Params) -> Params:
  """Raises ``ValueError`` unless the layers form one stack: every layer has the same
  hidden size, and each takes the previous layer's output as its input."""
  hidden = [p["kernel_hh"].shape[0] for p in params.values()]
  for k in range(1, len(params)):
    if hidden[k] != hidden[0]:
      raise ValueError(
        f"layer {k} has {hidden[k]} hidden units and layer 0 has {hidden[0]}; an LSTMStack's "
        "layers share one hidden size"
      )
    inputs = params[f"layer_{k}"]["kernel_ih"].shape[0]
    if inputs != hidden[k - 1]:
      raise ValueError(
        f"layer {k} takes {inputs} inputs, but layer {k - 1} gives {hidden[k - 1]} (its hidden "
        "size); the layers do not form one stack"
      )
  return params


def _num_layers(params: Mapping[str, Any]) -> int:
  n = sum(1 for k in params if re.fullmatch(r"layer_\d+", k))
  if n == 0 or any(f"layer_{k}" not in params for k in range(n)):
    raise ValueError(
      f"expected LSTMStack parameters with keys layer_0, layer_1, ...; got {sorted(params)}. "
      "For a model pass variables['params']['lstm']"
    )
  return n


def to_torch_classifier(params: Mapping[str, Any], num_features: int | None = None) -> dict:
  """A ``SequenceClassifier``'s parameters -> the state dict of this PyTorch model::

    class Classifier(torch.nn.Module):
      def __init__(self, features, hidden, layers, outputs):
        super().__init__()
        self.lstm = torch.nn.LSTM(features, hidden, layers, batch_first=True)
        self.head = torch.nn.Linear(hidden, outputs)   # 1 for two classes (a sigmoid logit)

      def forward(self, x):                             # [B, T, F], every series full length
        y, _ = self.lstm(x)
        return self.head(y[:, -1])                      # for padded series: the last valid step

  Args:
    params: ``variables['params']`` of a ``SequenceClassifier``.
    num_features: checked against the first layer's input size when given.

  Returns:
    ``{'lstm.weight_ih_l0': ..., ..., 'head.weight' [outputs, H], 'head.bias' [outputs]}``
    as numpy; load with ``model.load_state_dict({k: torch.from_numpy(v) ...})``.
  """
  if "lstm" not in params or "head" not in params:
    raise ValueError(
      f"expected a SequenceClassifier's params with 'lstm' and 'head', got {sorted(params)}"
    )
  out = to_torch_lstm(params["lstm"], prefix="lstm.")
  if num_features is not None and out["lstm.weight_ih_l0"].shape[1] != num_features:
    raise ValueError(
      f"the classifier takes {out['lstm.weight_ih_l0'].shape[1]} features, not {num_features}"
    )
  out["head.weight"] = _np(params["head"]["kernel"]).T.copy()
  out["head.bias"] = _np(params["head"]["bias"]).copy()
  return out
