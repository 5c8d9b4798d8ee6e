"""CLI: a manifest of videos -> a latent cache for training (thin: flags -> precompute_latent_cache).

    python -m sana_jax.training.precompute --pipeline PATH --manifest M.jsonl --out DIR \
        --height 480 --width 832 --frames 81 --fps 16
"""

from __future__ import annotations

import argparse
import sys

from sana_jax.training.data.precompute import STORAGE_DTYPES, precompute_latent_cache


def main(argv: list[str] | None = None) -> int:
    from sana_jax import _cli
    from sana_jax._cli import float_arg, positive_int_arg

    parser = argparse.ArgumentParser(prog="python -m sana_jax.training.precompute", description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", required=True, help="SANA-Video pipeline folder (VAE and text encoder)")
    parser.add_argument("--manifest", required=True, help='JSONL: {"video"|"image": PATH, "caption": TEXT} per line')
    parser.add_argument("--out", required=True, help="latent-cache folder to write: new, empty or an earlier cache "
                                                     "(replaced whole)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty --out that is not a latent cache (everything in it is deleted)")
    parser.add_argument("--height", type=positive_int_arg, required=True)
    parser.add_argument("--width", type=positive_int_arg, required=True)
    parser.add_argument("--frames", type=positive_int_arg, required=True,
                        help="frames per clip (4k+1 for the Wan VAE)")
    parser.add_argument("--fps", type=float_arg(0, above=True), required=True,
                        help="frame rate clips are resampled to")
    parser.add_argument("--batch-size", type=positive_int_arg, default=1, help="clips per VAE call")
    parser.add_argument("--records-per-shard", type=positive_int_arg, default=256)
    parser.add_argument("--dtype", default="float32", choices=STORAGE_DTYPES, help="storage dtype of latents")
    parser.add_argument("--decode-threads", type=positive_int_arg, default=2)
    args = parser.parse_args(argv)

    def work():
        precompute_latent_cache(args.manifest, args.pipeline, args.out, height=args.height, width=args.width,
                                frames=args.frames, fps=args.fps, batch_size=args.batch_size,
                                records_per_shard=args.records_per_shard, dtype=args.dtype,
                                decode_threads=args.decode_threads, overwrite=args.overwrite)

    return _cli.run(work, interrupted=f"{args.out} left as it was")


if __name__ == "__main__":
    sys.exit(main())
