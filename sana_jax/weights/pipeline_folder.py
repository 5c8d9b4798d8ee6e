"""Whole pipeline folders between formats: every model component converted, the rest copied."""

from __future__ import annotations

import os
import shutil

from sana_jax import _io
from sana_jax.config import ConfigError, read_json

FORMATS = {"to-jax": "jax", "to-torch": "diffusers"}


def convert_pipeline_folder(src: str | os.PathLike, dst: str | os.PathLike, format: str) -> list[str]:
    """Writes ``dst`` as ``src`` with each model component saved in ``format`` ("jax" or "diffusers").

    model_index.json, the scheduler, the tokenizer and other top-level files (sample_defaults.json, a README) are
    copied unchanged. Returns the converted component names.
    The destination appears whole or not at all.
    """
    from sana_jax.components import REGISTRY, load_component, save_component

    src, dst = os.fspath(src), os.fspath(dst)
    if format not in FORMATS.values():
        raise ValueError(f"format={format!r}; expected one of {sorted(FORMATS.values())}")
    index = read_json(os.path.join(src, "model_index.json"))
    components = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[1]]
    converted = []
    with _io.atomic_directory(dst) as tmp:
        for entry in sorted(os.listdir(src)):
            if os.path.isfile(os.path.join(src, entry)) and not entry.startswith("."):
                shutil.copy2(os.path.join(src, entry), os.path.join(tmp, entry))
        for name in components:
            folder = os.path.join(src, name)
            if not os.path.isdir(folder):
                raise ConfigError(f"{src}: component {name!r} is listed in model_index.json but has no folder")
            config_path = os.path.join(folder, "config.json")
            if os.path.isfile(config_path):
                class_name = index[name][1]
                if class_name not in REGISTRY and read_json(config_path).get("_class_name") not in REGISTRY:
                    raise ConfigError(f"{folder}: model class {class_name!r} has no JAX implementation yet; "
                                      f"supported: {sorted(REGISTRY)}")
                save_component(load_component(folder), os.path.join(tmp, name), format=format)
                converted.append(name)
            else:  # scheduler, tokenizer
                shutil.copytree(folder, os.path.join(tmp, name))
    return converted
