"""The synthetic shapes world and the demo model trained on it.

    world.py      the world: coloured shapes gliding on a torus, captions, the held-out split, a data source
    detect.py     a deterministic detector reading colour, shape and direction back from uint8 video
    evaluate.py   scores built on it, and the evaluation CLI (``python -m sana_jax.shapes.evaluate``)
    build.py      the demo model's build steps around ``train.py`` (``python -m sana_jax.shapes.build``)
    model/        the demo model (JAX format, package data): `DEMO_MODEL`, the 4-step block-causal LongSANA
                  student distilled from the teacher
    teacher/      the teacher it was distilled from (20 DPM-Solver steps with CFG): `DEMO_TEACHER`

``DEMO_MODEL`` is the path of the shipped demo pipeline folder, ``sample.py``'s default model:
``SanaVideoPipeline.from_pretrained(sana_jax.shapes.DEMO_MODEL)``; ``DEMO_TEACHER`` the teacher's (a
``SanaVideoTransformer3DModel`` diffusers' own pipeline runs). Both resolve inside the installed package
(``importlib.resources``), so they work from a checkout and from a non-editable install alike.
"""

import importlib.resources
import os

DEMO_MODEL = os.fspath(importlib.resources.files(__name__) / "model")
DEMO_TEACHER = os.fspath(importlib.resources.files(__name__) / "teacher")
