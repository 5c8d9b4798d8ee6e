"""A folder of precomputed training examples: ArrayRecord shards of VAE latents and caption embeddings.

    metadata.json             {"format", "count", "shards": [{"file", "count"}], "latent_shape", "text_length",
                               "text_dim", "dtype", "skipped", "config"}
    records-00000.array_record, ...   one record per example (group_size 1, for random access)
    null_text.safetensors     "embeds" (L, D), "mask" (L,): the empty caption, for caption dropout

A record is a small self-describing byte string (no pickle): an 8-byte little-endian header length, a JSON header
{"caption": str, "arrays": {name: [dtype, shape, offset]}}, then the arrays' raw little-endian bytes.
Reading gives float32 latents and embeddings whatever the stored dtype.
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

from sana_jax import _io
from sana_jax.training.data.unreadable import Unreadable, describe

FORMAT = "sana_jax.latent_cache/1"
METADATA = "metadata.json"
NULL_TEXT = "null_text.safetensors"
PROGRESS = "progress.json"  # a resumable writer's record of its finished shards (removed by close)
ARRAYS = ("latents", "text_embeds", "text_mask")
_DTYPES = {"float32": np.dtype("<f4"), "bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype("<f2"),
           "int32": np.dtype("<i4")}
_NAMES = {v: k for k, v in _DTYPES.items()}


class LatentCacheError(ValueError):
    """A latent-cache folder that is missing or malformed."""


def encode_record(arrays: dict[str, np.ndarray], caption: str) -> bytes:
    header = {"caption": caption, "arrays": {}}
    blobs, offset = [], 0
    for name in ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        if a.dtype not in _NAMES:
            raise TypeError(f"record array {name!r}: unsupported dtype {a.dtype} (supported: {sorted(_DTYPES)})")
        header["arrays"][name] = [_NAMES[a.dtype], list(a.shape), offset]
        blobs.append(a.tobytes())
        offset += a.nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def decode_record(data: bytes) -> dict:
    """Bytes -> {"latents", "text_embeds" float32, "text_mask" int32, "caption" str}; ValueError if malformed."""
    if len(data) < 8:
        raise ValueError(f"record of {len(data)} bytes has no header")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"record header of {n} bytes overruns the record ({len(data)} bytes)")
    try:
        header = json.loads(data[8:8 + n])
        payload = memoryview(data)[8 + n:]
        out = {"caption": str(header["caption"])}
        for name in ARRAYS:
            dtype_name, shape, offset = header["arrays"][name]
            dtype = _DTYPES[dtype_name]
            count = int(np.prod(shape))
            if offset + count * dtype.itemsize > len(payload):
                raise ValueError(f"array {name!r} {dtype_name}{tuple(shape)} overruns the record")
            a = np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape)
            out[name] = a.astype(np.int32 if name == "text_mask" else np.float32)
    except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"malformed record header ({describe(e)})") from None
    return out


class LatentCacheWriter:
    """Appends records to shards of ``records_per_shard`` in ``folder``; ``close`` writes metadata and null text.

    Write into a temporary folder (``sana_jax._io.atomic_directory``) so a failed run leaves no half cache.
    """

    def __init__(self, folder: str, *, records_per_shard: int = 256, resumable: bool = False):
        """``resumable``: record every finished shard in ``PROGRESS`` and start from the shards recorded there (a
        shard left unfinished by an interrupted run is removed); ``count`` says where to continue."""
        if records_per_shard < 1:
            raise ValueError(f"records_per_shard={records_per_shard}: must be >= 1")
        self.folder, self.records_per_shard, self.resumable = folder, records_per_shard, resumable
        self.shards: list[dict] = []
        self.count = 0
        self._writer = None
        self._shapes: dict[str, tuple] | None = None
        progress = os.path.join(folder, PROGRESS)
        if resumable and os.path.isfile(progress):
            with open(progress, encoding="utf-8") as f:
                done = json.load(f)
            if done["records_per_shard"] != records_per_shard:
                raise ValueError(f"{progress}: written with records_per_shard={done['records_per_shard']}, "
                                 f"resumed with {records_per_shard}")
            self.shards, self.count = done["shards"], done["count"]
            self._shapes = {k: tuple(v) for k, v in done["shapes"].items()}
            self._dtype = done["dtype"]
            keep = {s["file"] for s in self.shards} | {PROGRESS}
            for name in os.listdir(folder):
                if name not in keep and name.startswith("records-"):
                    os.remove(os.path.join(folder, name))

    def write(self, *, latents: np.ndarray, text_embeds: np.ndarray, text_mask: np.ndarray, caption: str) -> None:
        arrays = {"latents": latents, "text_embeds": text_embeds, "text_mask": text_mask.astype(np.int32)}
        shapes = {k: tuple(v.shape) for k, v in arrays.items()}
        if self._shapes is None:
            self._shapes = shapes
        elif shapes != self._shapes:
            raise ValueError(f"record {self.count}: shapes {shapes} differ from the first record's {self._shapes}")
        if self._writer is None or self.shards[-1]["count"] == self.records_per_shard:
            self._next_shard()
        self._writer.write(encode_record(arrays, caption))
        self.shards[-1]["count"] += 1
        self.count += 1
        self._dtype = _NAMES[np.asarray(latents).dtype]

    def _next_shard(self) -> None:
        from array_record.python.array_record_module import ArrayRecordWriter

        self._close_shard()
        name = f"records-{len(self.shards):05d}.array_record"
        self._writer = ArrayRecordWriter(os.path.join(self.folder, name), "group_size:1")
        self.shards.append({"file": name, "count": 0})

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            if self.resumable:
                done = {"records_per_shard": self.records_per_shard, "shards": self.shards, "count": self.count,
                        "shapes": self._shapes, "dtype": self._dtype}
                _io.atomic_write_text(os.path.join(self.folder, PROGRESS), json.dumps(done) + "\n")

    def close(self, *, null_embeds: np.ndarray, null_mask: np.ndarray, skipped: int = 0,
              config: dict | None = None) -> dict:
        """Finishes the last shard; writes ``null_text.safetensors`` and ``metadata.json``; returns the metadata."""
        self._close_shard()
        if not self.count:
            raise ValueError(f"{self.folder}: no records were written")
        _io.write_safetensors(os.path.join(self.folder, NULL_TEXT),
                              {"embeds": np.asarray(null_embeds, np.float32),
                               "mask": np.asarray(null_mask, np.int32)})
        latent_shape = self._shapes["latents"]
        text_length, text_dim = self._shapes["text_embeds"]
        metadata = {"format": FORMAT, "count": self.count, "shards": self.shards, "latent_shape": list(latent_shape),
                    "text_length": text_length, "text_dim": text_dim, "dtype": self._dtype, "skipped": skipped,
                    "config": config or {}}
        _io.atomic_write_text(os.path.join(self.folder, METADATA), json.dumps(metadata, indent=2) + "\n")
        if os.path.exists(os.path.join(self.folder, PROGRESS)):
            os.remove(os.path.join(self.folder, PROGRESS))
        return metadata


def read_metadata(folder: str | os.PathLike) -> dict:
    folder = os.fspath(folder)
    path = os.path.join(folder, METADATA)
    if not os.path.isfile(path):
        raise LatentCacheError(f"{folder}: not a latent cache (no {METADATA}); write one with "
                               f"python -m sana_jax.training.precompute")
    with open(path, encoding="utf-8") as f:
        try:
            metadata = json.load(f)
        except json.JSONDecodeError as e:
            raise LatentCacheError(f"{path}: malformed JSON ({e})") from None
    if metadata.get("format") != FORMAT:
        raise LatentCacheError(f"{path}: format {metadata.get('format')!r}; expected {FORMAT!r}")
    for shard in metadata["shards"]:
        if not os.path.isfile(os.path.join(folder, shard["file"])):
            raise LatentCacheError(f"{folder}: shard {shard['file']} listed in {METADATA} is missing")
    return metadata


def read_null_text(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The cache's empty-caption conditioning: (L, D) float32, (L,) int32."""
    read_metadata(folder)
    tensors = _io.read_safetensors(os.path.join(os.fspath(folder), NULL_TEXT))
    return np.array(tensors["embeds"], np.float32), np.array(tensors["mask"], np.int32)


class LatentCacheExamples:
    """Record index -> {"latents", "text_embeds", "text_mask"}, or ``Unreadable`` for a corrupt record; picklable.

    Shards open lazily, so a copy sent to a worker process opens its own readers.
    """

    def __init__(self, folder: str | os.PathLike):
        import grain

        self.folder = os.path.abspath(os.fspath(folder))
        self.metadata = read_metadata(self.folder)
        # "file[0:n]" tells the source each shard's size without opening every shard up front.
        paths = [f"{os.path.join(self.folder, s['file'])}[0:{s['count']}]" for s in self.metadata["shards"]]
        self._source = grain.sources.ArrayRecordDataSource(paths)
        self._shard_ends = np.cumsum([s["count"] for s in self.metadata["shards"]])

    def __len__(self) -> int:
        return int(self.metadata["count"])

    def record(self, index: int) -> dict:
        """Record ``index`` whole, caption included (``decode_record``); ValueError if it is malformed."""
        return decode_record(self._source[index])

    def __call__(self, index: int) -> dict | Unreadable:
        try:
            record = self.record(index)
        except Exception as e:  # noqa: BLE001 -- a corrupt record is skipped and counted, not fatal
            shard = self.metadata["shards"][int(np.searchsorted(self._shard_ends, index, side="right"))]["file"]
            return Unreadable(f"{os.path.join(self.folder, shard)} record {index}", describe(e))
        del record["caption"]
        return record

    @staticmethod
    def collate(examples: list[dict]) -> dict[str, np.ndarray]:
        return {key: np.stack([e[key] for e in examples]) for key in ARRAYS}
