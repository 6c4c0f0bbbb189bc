"""``python -m lstmdrop_jax.train``: the training command line (``cli.py``)."""

from lstmdrop_jax.cli import main

main()
