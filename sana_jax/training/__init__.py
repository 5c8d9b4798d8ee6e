"""Training: flow-matching objective, train state, sharded step on a device mesh, grain data, orbax checkpoints.

``python train.py --config configs/NAME.py --workdir DIR`` runs ``trainer.train``; the pieces are importable:
``objective`` (the math), ``tasks`` (what is trained), ``state`` / ``step`` (optimiser and the jitted step),
``mesh`` (axes and logical rules), ``data`` (grain pipelines), ``checkpoint``, ``metrics``, ``export``.
"""
