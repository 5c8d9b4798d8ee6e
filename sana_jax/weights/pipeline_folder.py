"""Whole pipeline folders between formats: every model component converted, the rest copied.

What a conversion may write: ``dst`` when it does not exist, is an empty folder, or holds an earlier conversion's
output (marked by ``CONVERSION_MARKER``); any other folder only with ``overwrite=True``; never a folder that is
``src``, contains it or lies inside it. Component names read from model_index.json are plain names whose folders
resolve (symlinks followed) inside ``src``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
from typing import Callable, Iterator

from sana_jax import _io
from sana_jax.config import ConfigError, read_json

FORMATS = {"to-jax": "jax", "to-torch": "diffusers"}
CONVERSION_MARKER = ".sana_jax_conversion.json"  # written into every conversion output; copied from no source


def check_destination(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Raises (before any work) when writing ``dst`` could destroy what the conversion did not write."""
    _io.check_output_folder(dst, sources=[src], marker=CONVERSION_MARKER, overwrite=overwrite,
                            what="conversion")


@contextlib.contextmanager
def conversion_output(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
                      **provenance) -> Iterator[str]:
    """Yields a temporary folder that replaces ``dst`` whole on success, after ``check_destination``; the marker
    that lets a later conversion replace it again is written last."""
    check_destination(src, dst, overwrite=overwrite)
    with _io.atomic_directory(dst) as tmp:
        yield tmp
        record = {"source": os.path.abspath(src), **provenance}
        _io.atomic_write_text(os.path.join(tmp, CONVERSION_MARKER), json.dumps(record, indent=2) + "\n")


def check_finite(model, where: str, *, strict: bool, warn: Callable[[str], None] | None = None) -> None:
    """NaN/inf in ``model``'s params: an error with ``strict``, else one warning (``warn``, default: a line on
    stderr); either names the params."""
    from sana_jax.components import non_finite_params

    bad = non_finite_params(model)
    if not bad:
        return
    listed = ", ".join(f"{k} ({n})" for k, n in list(bad.items())[:5]) + (" ..." if len(bad) > 5 else "")
    message = f"{where}: {sum(bad.values())} non-finite weight value(s) in {len(bad)} param(s): {listed}"
    if strict:
        raise ValueError(message)
    (warn or functools.partial(print, file=sys.stderr))(f"warning: {message}")


def convert_pipeline_folder(src: str | os.PathLike, dst: str | os.PathLike, format: str, *, overwrite: bool = False,
                            strict: bool = False, warn: Callable[[str], None] | None = None,
                            quantize: str | None = None) -> list[str]:
    """Writes ``dst`` as ``src`` with each model component saved in ``format`` ("jax" or "diffusers").

    model_index.json, the scheduler, the tokenizer and other top-level files (sample_defaults.json, a README) are
    copied unchanged. Returns the converted component names. The destination appears whole or not at all, and
    only where ``check_destination`` allows. Non-finite weights are a warning (``warn``), or an error with
    ``strict``. ``quantize`` ("int8", "w8a8", "fp8"; JAX format only): the components `sana_jax.quantize` applies to
    (the transformer, the text encoder) are written quantized, loaded later with no quantization work.
    """
    from sana_jax import quantize as quantization
    from sana_jax.components import REGISTRY, load_component, write_component

    src, dst = os.fspath(src), os.fspath(dst)
    if format not in FORMATS.values():
        raise ValueError(f"format={format!r}; expected one of {sorted(FORMATS.values())}")
    if quantize is not None:
        quantization.check_mode(quantize)
        if format != "jax":
            raise ValueError(f"quantize={quantize!r}: quantized weights are written in the JAX format only "
                             f"(to-jax), not {format!r}")
    index_path = os.path.join(src, "model_index.json")
    index = read_json(index_path)
    components = [_io.plain_name(k, where=index_path, what="component")
                  for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[1]]
    folders = {name: _io.inside(src, name, where=index_path, what="component", resolve=True) for name in components}
    converted = []
    with conversion_output(src, dst, overwrite=overwrite, format=format) as tmp:
        for entry in sorted(os.listdir(src)):
            if os.path.isfile(os.path.join(src, entry)) and not entry.startswith("."):
                shutil.copy2(os.path.join(src, entry), os.path.join(tmp, entry))
        for name, folder in folders.items():
            if not os.path.isdir(folder):
                raise ConfigError(f"{src}: component {name!r} is listed in model_index.json but has no folder")
            config_path = os.path.join(folder, "config.json")
            if os.path.isfile(config_path):
                class_name = index[name][1]
                if class_name not in REGISTRY and read_json(config_path).get("_class_name") not in REGISTRY:
                    raise ConfigError(f"{folder}: model class {class_name!r} has no JAX implementation yet; "
                                      f"supported: {sorted(REGISTRY)}")
                model = load_component(folder)
                check_finite(model, folder, strict=strict, warn=warn)
                if quantize is not None and model.class_name in quantization.TARGETS:
                    model = quantization.quantize_component(model, quantize)
                os.mkdir(os.path.join(tmp, name))
                write_component(model, os.path.join(tmp, name), format)
                converted.append(name)
            else:  # scheduler, tokenizer
                shutil.copytree(folder, os.path.join(tmp, name))
    return converted
