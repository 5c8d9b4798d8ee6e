"""Command line: ``python -m convert to-jax|to-torch SRC DST`` (see ``__main__``)."""
