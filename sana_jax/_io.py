"""File IO with the project's two rules: errors name the file, and nothing half-written is ever left behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
from typing import Iterator, Mapping

import ml_dtypes
import numpy as np

# safetensors dtype tags <-> numpy dtypes (bf16 through ml_dtypes, so no framework is needed to read a file).
_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_TAGS = {v: k for k, v in _DTYPES.items()}


class WeightFileError(ValueError):
    """A weight file that is missing, truncated or malformed."""


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary directory beside ``path``; on success it replaces ``path`` in one rename."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        yield tmp
        if os.path.isdir(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.rename(path, os.path.join(old, "x"))
            os.rename(tmp, path)
            shutil.rmtree(old)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a .safetensors file into numpy arrays (memory-mapped), checking its header against its size."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise WeightFileError(f"{path}: weight file not found") from None
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightFileError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise WeightFileError(f"{path}: truncated safetensors file (header of {n} bytes, file of {size})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WeightFileError(f"{path}: malformed safetensors header ({e})") from None
    header.pop("__metadata__", None)
    data_size = size - 8 - n
    end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    if end > data_size:
        raise WeightFileError(f"{path}: truncated safetensors file (tensors need {end} bytes of data, "
                              f"the file holds {data_size})")
    buf = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n, shape=(data_size,)) if data_size else b""
    out = {}
    for key, info in header.items():
        if info["dtype"] not in _DTYPES:
            raise WeightFileError(f"{path}: tensor {key!r} has unsupported dtype {info['dtype']}")
        dtype = _DTYPES[info["dtype"]]
        start, stop = info["data_offsets"]
        shape = tuple(info["shape"])
        if (stop - start) != int(np.prod(shape)) * dtype.itemsize:
            raise WeightFileError(f"{path}: tensor {key!r} has {stop - start} bytes for shape {shape} {dtype}")
        out[key] = np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape)), offset=start).reshape(shape)
    return out


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Writes a .safetensors file atomically (keys sorted, 8-byte aligned header, as the reference writer)."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    arrays = []
    for key in sorted(tensors):
        a = np.ascontiguousarray(tensors[key])
        if a.dtype not in _TAGS:
            raise WeightFileError(f"{path}: tensor {key!r} has unsupported dtype {a.dtype}")
        header[key] = {"dtype": _TAGS[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for a in arrays:
                f.write(a.tobytes())
