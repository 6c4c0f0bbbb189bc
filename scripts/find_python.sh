# Sourced by the GPU scripts: sets PYBIN to the first Python that can import JAX.
# On the lent GPU machine a plain `python3` may lack it (there JAX and PyTorch
# live in /opt/torch/.venv); PYTHON=... names it instead.
PYBIN=
if [ -n "${PYTHON:-}" ]; then
  if ! "$PYTHON" -c "import jax"; then
    echo "error: PYTHON=$PYTHON cannot import jax; point it at a Python that can" >&2
    exit 2
  fi
  PYBIN=$PYTHON
else
  for candidate in python3 python /opt/*/.venv/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import jax" 2>/dev/null; then
      PYBIN=$candidate
      break
    fi
  done
  if [ -z "$PYBIN" ]; then
    echo "error: no Python that can import jax found; set PYTHON=/path/to/python" >&2
    exit 2
  fi
fi
