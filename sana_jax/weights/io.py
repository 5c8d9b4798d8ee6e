"""Reading and writing state dicts: single-file and sharded safetensors, and PyTorch `.pth` files read safely."""

from __future__ import annotations

import json
import os
import struct
from typing import Mapping

import numpy as np

from sana_jax._io import WeightFileError, inside, read_safetensors, write_safetensors

DEFAULT_MAX_SHARD_BYTES = 10 * 1024**3  # diffusers' default max_shard_size ("10GB")


def read_state_dict(folder: str | os.PathLike, weights_name: str) -> dict[str, np.ndarray]:
    """Reads ``{weights_name}.safetensors`` or the shards listed in ``{weights_name}.safetensors.index.json``.

    Every shard the index names must lie inside ``folder`` (``_io.inside``: an absolute name or one whose ``..``
    leads out is an UnsafePathError naming the index and the entry, raised before any file is opened).
    """
    folder = os.fspath(folder)
    single = os.path.join(folder, f"{weights_name}.safetensors")
    index = single + ".index.json"
    if os.path.isfile(single):
        return read_safetensors(single)
    if os.path.isfile(index):
        weight_map = _read_weight_map(index)
        names = sorted(set(weight_map.values()))
        shards = {shard: inside(folder, shard, where=index, what="shard") for shard in names}
        out: dict[str, np.ndarray] = {}
        for shard, path in shards.items():
            tensors = read_safetensors(path)
            for key in tensors:
                if weight_map.get(key) != shard:
                    raise WeightFileError(f"{path}: tensor {key!r} is not listed for this shard in {index}")
            out.update(tensors)
        absent = sorted(set(weight_map) - set(out))
        if absent:
            raise WeightFileError(f"{index}: key(s) {absent[:10]} listed but absent from their shards")
        return out
    raise WeightFileError(f"{folder}: no weights found (looked for {os.path.basename(single)} and "
                          f"{os.path.basename(index)})")


def _read_weight_map(index: str) -> dict[str, str]:
    """The ``weight_map`` of a safetensors index: tensor name -> shard file name, both strings."""
    try:
        with open(index, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightFileError(f"{index}: not a valid JSON safetensors index ({e})") from None
    if not isinstance(data, dict):
        raise WeightFileError(f"{index}: a JSON {type(data).__name__}; expected a JSON object with a 'weight_map'")
    if "weight_map" not in data:
        raise WeightFileError(f"{index}: no 'weight_map'; expected a safetensors index")
    weight_map = data["weight_map"]
    if not isinstance(weight_map, dict):
        raise WeightFileError(f"{index}: weight_map is a JSON {type(weight_map).__name__}; expected an object "
                              f"mapping tensor names to shard file names")
    for key, shard in weight_map.items():
        if not isinstance(shard, str):
            raise WeightFileError(f"{index}: weight_map entry {key!r} is {shard!r}; expected a shard file name")
    return weight_map


def write_state_dict(folder: str | os.PathLike, weights_name: str, tensors: Mapping[str, np.ndarray], *,
                     max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, metadata: Mapping[str, str] | None = None):
    """Writes one file, or diffusers-style shards ``{name}-0000i-of-0000n.safetensors`` plus an index."""
    folder = os.fspath(folder)
    total = sum(np.asarray(t).nbytes for t in tensors.values())
    if total <= max_shard_bytes:
        write_safetensors(os.path.join(folder, f"{weights_name}.safetensors"), tensors, metadata)
        return
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for key in sorted(tensors):
        nbytes = np.asarray(tensors[key]).nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensors[key]
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"{weights_name}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(os.path.join(folder, name), shard, metadata)
        weight_map.update({k: name for k in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(folder, f"{weights_name}.safetensors.index.json"), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)


# What torch 2.13 ``torch.load(weights_only=True)`` raised, besides pickle.UnpicklingError, for ~17,000 random,
# truncated and byte-mutated files (zip and legacy format): the unpickler and the zip reader fail in all of these
# ways on garbage (ValueError covers UnicodeDecodeError, LookupError KeyError and IndexError). OSError (the
# disk) and MemoryError are not among them and pass through.
_TORCH_LOAD_CORRUPT = (RuntimeError, EOFError, ValueError, LookupError, TypeError, AttributeError, AssertionError,
                       struct.error)


def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A `.pth`/`.pt` state dict via ``torch.load(weights_only=True)``: a file that needs code to load is refused.

    A top-level ``{"state_dict": ...}`` wrapper (the NVlabs training checkpoints) is unwrapped. A file that is not a
    readable checkpoint, or an entry that is not a plain dense tensor under a string key, is a WeightFileError
    naming the file (and the entry).
    """
    import pickle

    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightFileError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch rewraps its unpickler's message; the original (one line) is the exception's context.
        detail = str(e.__context__ or e).strip().splitlines()[0]
        if "global" in detail.lower() or "blocked" in detail.lower():
            raise WeightFileError(f"{path}: refused, the checkpoint needs more than plain tensors to load "
                                  f"(weights_only=True): {detail}") from None
        raise WeightFileError(f"{path}: not a readable PyTorch checkpoint (corrupt, truncated or another format): "
                              f"{detail}") from None
    except _TORCH_LOAD_CORRUPT as e:
        detail = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'unexpected end'}"
        raise WeightFileError(f"{path}: not a readable PyTorch checkpoint (corrupt, truncated or another format): "
                              f"{detail}") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightFileError(f"{path}: expected a state dict, found {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise WeightFileError(f"{path}: entry {key!r} has a {type(key).__name__} key; expected a string")
        if not isinstance(value, torch.Tensor):
            raise WeightFileError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        if value.layout != torch.strided or value.is_meta:
            kind = "meta" if value.is_meta else str(value.layout)
            raise WeightFileError(f"{path}: entry {key!r} is a {kind} tensor; expected a dense tensor with data")
        value = value.detach().cpu().contiguous()
        if value.dtype == torch.bfloat16:
            import ml_dtypes

            out[key] = value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
            continue
        try:
            out[key] = value.numpy()
        except TypeError:
            raise WeightFileError(f"{path}: entry {key!r} has dtype {value.dtype}, which has no NumPy "
                                  f"equivalent (float8 and quantized tensors are not supported)") from None
    return out


def read_checkpoint_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """One weight file by extension: `.safetensors`, or `.pth`/`.pt`/`.bin` (PyTorch, weights only)."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if path.endswith((".pth", ".pt", ".bin")):
        return read_torch_checkpoint(path)
    raise WeightFileError(f"{path}: unknown checkpoint format; expected .safetensors, .pth, .pt or .bin")
