"""Sample a video from a prompt (and optionally a first-frame image) and write it as an mp4.

    python sample.py --prompt "a red circle moving left" --out video.mp4         # the embedded demo model
    python sample.py --model PATH --prompt "..." --out video.mp4                  # any pipeline folder

Size, frames, steps, guidance, fps (and streaming) default to what the model folder declares in
sample_defaults.json, else to the published SANA-Video settings (480x832, 81 frames, 50 steps, guidance 6, 16 fps).
"""

import argparse
import os
import sys
import warnings


def main(argv=None) -> int:
    from sana_jax._cli import add_quantize_arguments, float_arg, int_arg, positive_int_arg, seed_arg

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", required=True)
    p.add_argument("--model", default=None,
                   help="a SANA-Video pipeline folder (diffusers layout, or written by `python -m convert to-jax`); "
                        "default: the demo model shipped with the package (sana_jax.shapes.DEMO_MODEL)")
    p.add_argument("--image", default=None, help="first frame for image-to-video")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--height", type=positive_int_arg, default=None)
    p.add_argument("--width", type=positive_int_arg, default=None)
    p.add_argument("--frames", type=positive_int_arg, default=None)
    p.add_argument("--steps", type=positive_int_arg, default=None)
    p.add_argument("--guidance", type=float_arg(0), default=None)
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--fps", type=positive_int_arg, default=None)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    add_quantize_arguments(p)
    p.add_argument("--offload-text-encoder", action="store_true",
                   help="keep the text encoder's weights in host memory, on the device only while encoding")
    p.add_argument("--decode-frames", type=int_arg(0), default=None,
                   help="without --stream: the VAE decodes this many latent frames at a time through its carried "
                        "state (constant activation memory; 0, the default: the whole clip at once)")
    p.add_argument("--cfg-sequential", action="store_true",
                   help="without --stream: run CFG's negative and positive branch as two transformer calls per "
                        "step instead of one batched call (the same video, half the denoising activation memory)")
    p.add_argument("--out", default="video.mp4")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="long video block by block in constant memory, appended to the mp4 as it is decoded "
                        "(default: the folder's sample_defaults.json, else on for block-causal checkpoints)")
    p.add_argument("--block-frames", type=positive_int_arg, default=None,
                   help="latent frames per block with --stream (default: the folder's, else 10)")
    p.add_argument("--decode-window", type=int, default=None,
                   help="with --stream: decode each block after latent frame 0 and this many before it (0: one "
                        "causal decode of the whole video); default: the model's sample_defaults.json")
    p.add_argument("--sampler", default=None, choices=["few_step", "dpm"],
                   help="with --stream: LongSANA few-step (no CFG) or the folder's multistep scheduler with CFG")
    args = p.parse_args(argv)

    from sana_jax import _cli
    from sana_jax.pipeline.finite import NonFiniteError
    from sana_jax.pipeline.sample import merge_defaults, sample_to_file
    from sana_jax.shapes import DEMO_MODEL

    def work():
        model = args.model or DEMO_MODEL
        if not os.path.isdir(model):
            raise FileNotFoundError(f"--model {model}: no such folder")
        d = merge_defaults(model, height=args.height, width=args.width, frames=args.frames, steps=args.steps,
                           guidance=args.guidance, fps=args.fps, stream=args.stream, block_frames=args.block_frames,
                           sampler=args.sampler, decode_window=args.decode_window)
        stream = d.get("stream")   # None: streams for block-causal checkpoints
        extra = {}
        if stream is not False:
            extra = dict(block_frames=d.get("block_frames", 10), sampler=d.get("sampler", "few_step"),
                         decode_window=d.get("decode_window", 0))
        if args.decode_frames is not None:
            extra["decode_frames"] = args.decode_frames
        if args.cfg_sequential:
            extra["cfg_batched"] = False
        sample_to_file(model, args.prompt, args.out, image=args.image, fps=d["fps"], dtype=args.dtype,
                       quantize=args.quantize, quantize_components=args.quantize_components,
                       offload_text_encoder=args.offload_text_encoder, stream=stream,
                       negative_prompt=args.negative_prompt,
                       height=d["height"], width=d["width"], frames=d["frames"],
                       num_inference_steps=d["steps"], guidance_scale=d["guidance"], seed=args.seed, **extra)

    warnings.showwarning = lambda message, *_: print(f"warning: {message}", file=sys.stderr)
    return _cli.run(work, interrupted=f"nothing written to {args.out}", exit_codes={NonFiniteError: 1})

if __name__ == "__main__":
    from sana_jax._host import reexec_with_tuned_malloc

    reexec_with_tuned_malloc()  # first: restart under the host-memory setting (sana_jax/_host.py)
    sys.exit(main())
