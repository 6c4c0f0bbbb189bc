"""Helpers shared by the test files."""

import numpy as np
import pytest


def _torch_layout_weights(seed=0, layers=2, F=5, H=7):
  """Random weights in PyTorch nn.LSTM layout, U(-1/sqrt(H), 1/sqrt(H))."""
  rng = np.random.default_rng(seed)
  k = 1 / np.sqrt(H)
  sd = {}
  for layer in range(layers):
    fin = F if layer == 0 else H
    sd[f"weight_ih_l{layer}"] = rng.uniform(-k, k, (4 * H, fin)).astype(np.float32)
    sd[f"weight_hh_l{layer}"] = rng.uniform(-k, k, (4 * H, H)).astype(np.float32)
    sd[f"bias_ih_l{layer}"] = rng.uniform(-k, k, (4 * H,)).astype(np.float32)
    sd[f"bias_hh_l{layer}"] = rng.uniform(-k, k, (4 * H,)).astype(np.float32)
  return sd


@pytest.fixture
def torch_weights():
  """``torch_weights(seed=0, layers=2, F=5, H=7)``: a random ``nn.LSTM`` state dict (numpy)."""
  return _torch_layout_weights
