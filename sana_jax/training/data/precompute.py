"""Manifest -> latent cache: decode each clip, encode it with the pipeline's VAE and its caption with the text
encoder, once, so training reads latents instead of decoding and encoding videos every step.

    python -m sana_jax.training.precompute --pipeline PATH --manifest M.jsonl --out DIR \
        --height 480 --width 832 --frames 81 --fps 16
"""

from __future__ import annotations

import logging
import os

import ml_dtypes
import numpy as np

from sana_jax import _io
from sana_jax.training.data.latent_cache import METADATA, LatentCacheWriter
from sana_jax.training.data.manifest import ClipDecoder, ManifestExamples, read_manifest
from sana_jax.training.data.unreadable import Unreadable

_log = logging.getLogger(__name__)
STORAGE_DTYPES = ("float32", "bfloat16", "float16")


def precompute_latent_cache(manifest_path: str | os.PathLike, pipeline_path_or_pipeline, out_dir: str | os.PathLike,
                            *, height: int, width: int, frames: int, fps: float, batch_size: int = 1,
                            records_per_shard: int = 256, dtype: str = "float32", decode_threads: int = 2,
                            progress: bool = True, overwrite: bool = False) -> dict:
    """Writes the latent cache of ``manifest_path`` to ``out_dir`` (replacing it, in one rename); returns metadata.

    ``out_dir`` may be new, empty or an earlier latent cache; any other folder only with ``overwrite``, and never
    one overlapping the manifest or the pipeline folder (checked before anything loads).

    ``pipeline_path_or_pipeline``: a pipeline folder (loaded with ``SanaVideoPipeline.from_pretrained``) or a
    loaded pipeline. Clips are decoded as the ``manifest`` data source does (see manifest.py); unreadable ones are
    skipped, logged and counted in metadata.json. ``dtype``: storage dtype of latents and embeddings (reading
    gives float32). Raises, leaving no folder, when no entry is readable.
    """
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {STORAGE_DTYPES}")
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise ValueError(f"batch_size={batch_size!r}: expected a positive int")
    if not fps > 0:
        raise ValueError(f"fps={fps!r}: expected a positive number")
    sources = [manifest_path] + ([pipeline_path_or_pipeline]
                                 if isinstance(pipeline_path_or_pipeline, (str, os.PathLike)) else [])
    _io.check_output_folder(out_dir, sources=sources, marker=METADATA, overwrite=overwrite, what="latent cache")
    entries = read_manifest(manifest_path)
    if isinstance(pipeline_path_or_pipeline, (str, os.PathLike)):
        from sana_jax import SanaVideoPipeline

        pipe = SanaVideoPipeline.from_pretrained(pipeline_path_or_pipeline)
        pipeline_name = os.path.abspath(os.fspath(pipeline_path_or_pipeline))
    else:
        pipe, pipeline_name = pipeline_path_or_pipeline, type(pipeline_path_or_pipeline).__name__
    pipe.latent_shape(1, height, width, frames)          # checks the sizes against the VAE before any work
    examples = ManifestExamples(entries, ClipDecoder(height=height, width=width, frames=frames, fps=fps))
    config = {"manifest": os.path.abspath(os.fspath(manifest_path)), "pipeline": pipeline_name, "height": height,
              "width": width, "frames": frames, "fps": fps, "dtype": dtype}
    return write_latent_cache(examples, pipe, out_dir, config=config, batch_size=batch_size,
                              records_per_shard=records_per_shard, dtype=dtype, decode_threads=decode_threads,
                              progress=progress, overwrite=overwrite, sources=sources)


def write_latent_cache(examples, pipe, out_dir: str | os.PathLike, *, config: dict, batch_size: int = 1,
                       records_per_shard: int = 256, dtype: str = "float32", decode_threads: int = 2,
                       progress: bool = True, overwrite: bool = False, sources=()) -> dict:
    """Encodes every example of ``examples`` (a data source of {"video", "caption"} records: ``len``, indexing,
    ``collate``; `Unreadable` records are skipped and counted) with the loaded pipeline ``pipe`` into a latent
    cache at ``out_dir`` (replaced in one rename). ``config`` is recorded in metadata.json. The null text (caption
    dropout) is the empty negative prompt as the pipeline encodes it for classifier-free guidance. ``out_dir``
    follows ``_io.check_output_folder`` (``sources``: the inputs it may not overlap)."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {STORAGE_DTYPES}")
    storage = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    out_dir = os.path.abspath(os.fspath(out_dir))
    _io.check_output_folder(out_dir, sources=sources, marker=METADATA, overwrite=overwrite, what="latent cache")
    with _io.atomic_directory(out_dir) as tmp:
        writer = LatentCacheWriter(tmp, records_per_shard=records_per_shard)
        skipped, pending = 0, []
        for example in _decoded(examples, decode_threads, progress):
            if isinstance(example, Unreadable):
                skipped += 1
                _log.warning("precompute: skipping %s: %s", example.what, example.reason)
                continue
            pending.append(example)
            if len(pending) == batch_size:
                _encode_and_write(pipe, examples, pending, writer, storage)
                pending = []
        if pending:
            _encode_and_write(pipe, examples, pending, writer, storage)
        if not writer.count:
            raise ValueError(f"{config.get('manifest', 'the data source')}: none of its {len(examples)} entries "
                             f"could be decoded (see the "
                             f"warnings above); no latent cache written")
        null_embeds, null_mask = pipe.encode_prompt([""], negative=True)
        metadata = writer.close(null_embeds=np.asarray(null_embeds)[0], null_mask=np.asarray(null_mask)[0],
                                skipped=skipped, config=config)
    print(f"wrote a latent cache of {metadata['count']} examples ({skipped} skipped) to {out_dir}")
    return metadata


def _decoded(examples, threads: int, progress: bool):
    """The source's examples in order, decoded by ``threads`` threads."""
    import grain
    from tqdm.auto import tqdm

    ds = grain.MapDataset.range(len(examples)).map(examples).to_iter_dataset(
        grain.ReadOptions(num_threads=max(1, threads), prefetch_buffer_size=2 * max(1, threads)))
    yield from tqdm(ds, total=len(examples), desc="precompute", unit="clip", disable=not progress)


def _encode_and_write(pipe, source, examples: list[dict], writer: LatentCacheWriter, storage: np.dtype) -> None:
    import jax.numpy as jnp

    batch = source.collate(examples)
    captions = batch["caption"].tolist()
    latents = np.asarray(pipe.encode_video(jnp.asarray(batch["video"])), np.float32)
    embeds, mask = pipe.encode_prompt(captions)
    embeds, mask = np.asarray(embeds, np.float32), np.asarray(mask, np.int32)
    for i, caption in enumerate(captions):
        writer.write(latents=latents[i].astype(storage), text_embeds=embeds[i].astype(storage),
                     text_mask=mask[i], caption=caption)
