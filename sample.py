"""Sample a video from a prompt (and optionally a first-frame image) and write it as an mp4.

    python sample.py --model PATH --prompt "a red circle moving left" --out video.mp4
"""

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", required=True)
    p.add_argument("--model", required=True,
                   help="a SANA-Video pipeline folder (diffusers layout, or written by `python -m convert to-jax`)")
    p.add_argument("--image", default=None, help="first frame for image-to-video")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=int, default=16)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--out", default="video.mp4")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="long video block by block in constant memory, appended to the mp4 as it is decoded "
                        "(default: on for block-causal checkpoints)")
    p.add_argument("--block-frames", type=int, default=10, help="latent frames per block with --stream")
    p.add_argument("--sampler", default="few_step", choices=["few_step", "dpm"],
                   help="with --stream: LongSANA few-step (no CFG) or the folder's multistep scheduler with CFG")
    args = p.parse_args(argv)

    from sana_jax.pipeline.sample import sample_to_file

    extra = dict(block_frames=args.block_frames, sampler=args.sampler) if args.stream is not False else {}
    try:
        sample_to_file(args.model, args.prompt, args.out, image=args.image, fps=args.fps, dtype=args.dtype,
                       stream=args.stream, negative_prompt=args.negative_prompt, height=args.height,
                       width=args.width, frames=args.frames, num_inference_steps=args.steps,
                       guidance_scale=args.guidance, seed=args.seed, **extra)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
