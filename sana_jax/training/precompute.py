"""CLI: a manifest of videos -> a latent cache for training (thin: flags -> precompute_latent_cache).

    python -m sana_jax.training.precompute --pipeline PATH --manifest M.jsonl --out DIR \
        --height 480 --width 832 --frames 81 --fps 16
"""

from __future__ import annotations

import argparse

from sana_jax.training.data.precompute import STORAGE_DTYPES, precompute_latent_cache


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sana_jax.training.precompute", description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", required=True, help="SANA-Video pipeline folder (VAE and text encoder)")
    parser.add_argument("--manifest", required=True, help='JSONL: {"video"|"image": PATH, "caption": TEXT} per line')
    parser.add_argument("--out", required=True, help="latent-cache folder to write (replaced if it exists)")
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--frames", type=int, required=True, help="frames per clip (4k+1 for the Wan VAE)")
    parser.add_argument("--fps", type=float, required=True, help="frame rate clips are resampled to")
    parser.add_argument("--batch-size", type=int, default=1, help="clips per VAE call")
    parser.add_argument("--records-per-shard", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=STORAGE_DTYPES, help="storage dtype of latents")
    parser.add_argument("--decode-threads", type=int, default=2)
    args = parser.parse_args(argv)
    precompute_latent_cache(args.manifest, args.pipeline, args.out, height=args.height, width=args.width,
                            frames=args.frames, fps=args.fps, batch_size=args.batch_size,
                            records_per_shard=args.records_per_shard, dtype=args.dtype,
                            decode_threads=args.decode_threads)


if __name__ == "__main__":
    main()
