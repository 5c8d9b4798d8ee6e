"""Evaluations of sampled video against worlds whose truth is known (``sana_jax.eval.shapes``)."""
