"""The files a tokenizer folder makes transformers open, checked before ``AutoTokenizer.from_pretrained(folder)``.

transformers 5.23 joins names from ``tokenizer_config.json`` onto the folder unchecked in two places (found by
experiment on a saved Gemma tokenizer folder):

- every ``fast_tokenizer_files`` entry matching ``tokenizer.<version>.json`` (an absolute path or one with ``..``
  included) is opened and used in place of the folder's ``tokenizer.json``;
- with no ``tokenizer.json`` in the folder, a ``vocab_file`` / ``merges_file`` value (any ``*_file`` keyword the
  tokenizer class does not list as its own file) is handed to the tokenizers backend, which reads it.

``tokenizer_file`` and the class's own file keywords are replaced by transformers with the folder's files. And a
folder with no vocabulary at all loads without an error, as a tokenizer that maps every word to ``<unk>``.
"""

from __future__ import annotations

import os

from sana_jax._io import WeightFileError, inside
from sana_jax.config import read_json

TOKENIZER_CONFIG = "tokenizer_config.json"
# Files transformers finds by name in the folder, any of which gives the tokenizer its vocabulary.
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model")


def _named_files(config):
    """(key, value) for every string under a ``*_file`` / ``*_files`` key, at any depth (``sp_model_kwargs``)."""
    if isinstance(config, dict):
        for key, value in config.items():
            if isinstance(key, str) and key.endswith(("_file", "_files")):
                for leaf in _strings(value):
                    yield key, leaf
            else:
                yield from _named_files(value)
    elif isinstance(config, list):
        for value in config:
            yield from _named_files(value)


def _strings(value):
    if value is None:
        return
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            yield from _strings(item)
    else:
        yield value  # a non-string here is refused by ``inside`` with its key


def check_tokenizer_folder(folder: str | os.PathLike) -> None:
    """Refuses a tokenizer folder that would make transformers read a file outside it, or that has no vocabulary.

    Every value under a ``*_file`` / ``*_files`` key of ``tokenizer_config.json`` must be a relative path inside
    ``folder`` (UnsafePathError naming the config and the key). Symlinked files inside the folder are followed, as
    in the Hugging Face cache. The folder must hold ``tokenizer.json`` or ``tokenizer.model``, or a vocabulary file
    its config names (WeightFileError otherwise).
    """
    folder = os.fspath(folder)
    config_path = os.path.join(folder, TOKENIZER_CONFIG)
    config = read_json(config_path) if os.path.isfile(config_path) else {}
    named = []
    for key, value in _named_files(config):
        path = inside(folder, value, where=config_path, what=f"{key!r} entry")
        if key in ("fast_tokenizer_files", "vocab_file"):  # transformers replaces a named tokenizer_file
            named.append(path)
    candidates = [os.path.join(folder, name) for name in VOCABULARY_FILES] + named
    if not any(os.path.isfile(path) for path in candidates):
        raise WeightFileError(f"{folder}: no vocabulary for the tokenizer (none of {list(VOCABULARY_FILES)}, nor a "
                              f"file {TOKENIZER_CONFIG} names); transformers would map every word to <unk>")


def load_tokenizer(folder: str | os.PathLike):
    """``check_tokenizer_folder``, then the tokenizer: the class its ``tokenizer_config.json`` names, taken from
    transformers directly when it has it (as AutoTokenizer would resolve it, without AutoTokenizer's imports of
    torch: a second of a cold start), else ``AutoTokenizer``."""
    import transformers

    check_tokenizer_folder(folder)
    config_path = os.path.join(folder, TOKENIZER_CONFIG)
    name = read_json(config_path).get("tokenizer_class") if os.path.isfile(config_path) else None
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and hasattr(cls, "from_pretrained")):
        cls = transformers.AutoTokenizer
    return cls.from_pretrained(os.fspath(folder))
