"""python -m convert to-jax SRC DST   # diffusers pipeline folder -> JAX folder (same layout, Flax params)
python -m convert to-torch SRC DST     # JAX folder -> diffusers folder that diffusers.SanaVideoPipeline loads"""

import argparse
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("direction", choices=["to-jax", "to-torch"])
    parser.add_argument("src", help="pipeline folder to read (has model_index.json)")
    parser.add_argument("dst", help="folder to write (replaced whole, atomically)")
    args = parser.parse_args(argv)

    from sana_jax.weights.pipeline_folder import FORMATS, convert_pipeline_folder

    start = time.perf_counter()
    try:
        done = convert_pipeline_folder(args.src, args.dst, FORMATS[args.direction])
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst} ({', '.join(done)} converted) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
