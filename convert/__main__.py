"""python -m convert to-jax SRC DST   # diffusers pipeline folder -> JAX folder (same layout, Flax params)
python -m convert to-jax SRC DST --quantize int8     # ... the transformer and text encoder saved quantized
python -m convert to-torch SRC DST     # JAX folder -> diffusers folder that diffusers.SanaVideoPipeline loads
python -m convert to-torch WORKDIR DST [--step N [N ...]] [--ema]   # a run's checkpoint (or the average of
                                       # several) -> a component folder
                                       # (to-jax on a run writes the same component in JAX format)"""

import argparse
import sys
import time


def main(argv=None) -> int:
    from sana_jax.quantize import MODES as QUANTIZE_MODES

    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("direction", choices=["to-jax", "to-torch"])
    parser.add_argument("src", help="pipeline folder to read (has model_index.json), or a training run's workdir")
    parser.add_argument("dst", help="folder to write, atomically: a new or empty folder, or an earlier conversion's "
                                    "output (replaced whole); never SRC or a folder holding it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty DST that no conversion wrote (everything in it is deleted)")
    parser.add_argument("--strict", action="store_true",
                        help="non-finite (NaN/inf) weights are an error (default: a warning)")
    parser.add_argument("--step", type=int, nargs="+", default=None,
                        help="training run: the checkpoint step (default latest); several steps: their params "
                             "averaged uniformly (checkpoint averaging)")
    parser.add_argument("--ema", action="store_true", help="training run: write the EMA params")
    parser.add_argument("--quantize", default=None, choices=QUANTIZE_MODES,
                        help="to-jax of a pipeline folder: write the transformer and text encoder quantized")
    args = parser.parse_args(argv)

    from sana_jax import _cli

    return _cli.run(lambda: _run(args), interrupted=f"{args.dst} left as it was")


def _run(args) -> int:
    start = time.perf_counter()
    from sana_jax.training.export import export_run, is_training_run
    from sana_jax.weights.pipeline_folder import FORMATS, convert_pipeline_folder

    if is_training_run(args.src):
        if args.quantize is not None:
            raise ValueError(f"--quantize {args.quantize}: applies to a pipeline folder; export the run first, then "
                             f"convert that folder with --quantize")
        step = export_run(args.src, args.dst, step=args.step, ema=args.ema, overwrite=args.overwrite,
                          strict=args.strict, format="diffusers" if args.direction == "to-torch" else "jax")
        which = f"step {step}" if isinstance(step, int) else f"average of steps {', '.join(map(str, step))}"
        print(f"wrote {args.dst} ({which}{' EMA' if args.ema else ''} of {args.src}) in "
              f"{time.perf_counter() - start:.1f} s")
        return 0
    if args.step is not None or args.ema:
        raise ValueError(f"{args.src}: --step / --ema apply to a training run's workdir only")
    done = convert_pipeline_folder(args.src, args.dst, FORMATS[args.direction], overwrite=args.overwrite,
                                   strict=args.strict, quantize=args.quantize)
    print(f"wrote {args.dst} ({', '.join(done)} converted) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
