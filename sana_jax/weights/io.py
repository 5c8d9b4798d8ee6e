"""Reading and writing state dicts: single-file and sharded safetensors, and PyTorch `.pth` files read safely."""

from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np

from sana_jax._io import WeightFileError, read_safetensors, write_safetensors

DEFAULT_MAX_SHARD_BYTES = 10 * 1024**3  # diffusers' default max_shard_size ("10GB")


def read_state_dict(folder: str | os.PathLike, weights_name: str) -> dict[str, np.ndarray]:
    """Reads ``{weights_name}.safetensors`` or the shards listed in ``{weights_name}.safetensors.index.json``."""
    folder = os.fspath(folder)
    single = os.path.join(folder, f"{weights_name}.safetensors")
    index = single + ".index.json"
    if os.path.isfile(single):
        return read_safetensors(single)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            try:
                weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise WeightFileError(f"{index}: not a safetensors index with a 'weight_map' ({e})") from None
        out: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            tensors = read_safetensors(os.path.join(folder, shard))
            for key in tensors:
                if weight_map.get(key) != shard:
                    raise WeightFileError(f"{os.path.join(folder, shard)}: tensor {key!r} is not listed for this "
                                          f"shard in {index}")
            out.update(tensors)
        absent = sorted(set(weight_map) - set(out))
        if absent:
            raise WeightFileError(f"{index}: key(s) {absent[:10]} listed but absent from their shards")
        return out
    raise WeightFileError(f"{folder}: no weights found (looked for {os.path.basename(single)} and "
                          f"{os.path.basename(index)})")


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


def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A `.pth`/`.pt` state dict via ``torch.load(weights_only=True)``: a file that needs code to load is refused.

    A top-level ``{"state_dict": ...}`` wrapper (the NVlabs training checkpoints) is unwrapped.
    """
    import pickle

    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightFileError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightFileError(f"{path}: refused, the checkpoint needs more than plain tensors to load "
                              f"(weights_only=True): {str(e).splitlines()[0]}") from None
    except (RuntimeError, EOFError) as e:
        raise WeightFileError(f"{path}: cannot read the checkpoint (truncated or corrupt?): {e}") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightFileError(f"{path}: expected a state dict, found {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise WeightFileError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu().contiguous()
        if value.dtype == torch.bfloat16:
            import ml_dtypes

            out[key] = value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            out[key] = value.numpy()
    return out


def read_checkpoint_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """One weight file by extension: `.safetensors`, or `.pth`/`.pt`/`.bin` (PyTorch, weights only)."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if path.endswith((".pth", ".pt", ".bin")):
        return read_torch_checkpoint(path)
    raise WeightFileError(f"{path}: unknown checkpoint format; expected .safetensors, .pth, .pt or .bin")
