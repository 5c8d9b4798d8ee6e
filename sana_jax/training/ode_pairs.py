"""CLI: a teacher's ODE trajectories -> a latent cache for LongSANA's ODE initialisation (task "ode_init").

    python -m sana_jax.training.ode_pairs --teacher PIPELINE --prompts CACHE --out DIR --clips 2048 \
        --block-frames 2 --guidance 6

Per clip: the teacher samples the clip block by block against its carried state, as ``pipe.stream`` lays blocks
out (CFG-guided flow-Euler ODE steps, ``--steps-per-level`` of them between consecutive few-step timesteps, uniform
in the unshifted time of a shift-``--shift`` grid), recorded at the few-step timesteps [1000, 960, 889, 727] and at
its end. Each record's ``latents`` is (5, F, H, W, C): those states, the last the clean sample; its text is the
prompt's from ``--prompts`` (a latent cache: captions, text embeddings, the empty caption as the negative), whose
clip shape (F, H, W, C) the trajectories take. Clip i uses prompt i mod the cache's size.

Resumable: the cache is written into ``DIR.partial`` shard by shard; an interrupted run, re-run with the same
arguments, continues after the last finished shard (each batch's noise depends on its index only, so the result
equals an uninterrupted run's). ``DIR`` appears whole at the end (the ``check_output_folder`` rule: new, empty or an
earlier latent cache; ``--overwrite`` for anything else).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np

from sana_jax.pipeline.denoise import FEW_STEP_TIMESTEPS

SETTINGS = "ode_pairs.json"  # the arguments of the run a .partial folder belongs to


def generate(teacher: str, prompts: str, out: str, *, clips: int, block_frames: int, guidance: float,
             steps_per_level: int = 10, shift: float = 8.0, batch_size: int = 16, records_per_shard: int = 256,
             seed: int = 0, overwrite: bool = False, progress: bool = True) -> dict:
    """Writes the trajectory cache (see the module docstring); returns its metadata."""
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from sana_jax import _io
    from sana_jax.components import load_component
    from sana_jax.pipeline.stream import block_sizes
    from sana_jax.training.data.latent_cache import (METADATA, LatentCacheExamples, LatentCacheWriter,
                                                     read_null_text)
    from sana_jax.training.distill import _transformer_folder, teacher_trajectories

    if records_per_shard % batch_size:
        raise ValueError(f"--records-per-shard {records_per_shard} must be a multiple of --batch-size {batch_size} "
                         "(a resumed run restarts at a shard boundary)")
    out = os.path.abspath(out)
    _io.check_output_folder(out, sources=[teacher, prompts], marker=METADATA, overwrite=overwrite,
                            what="latent cache")
    source = LatentCacheExamples(prompts)
    shape = tuple(source.metadata["latent_shape"])
    if len(shape) != 4:
        raise ValueError(f"--prompts {prompts}: latents of shape {shape}; expected a clip cache (F, H, W, C)")
    blocks = block_sizes(shape[0], block_frames)
    negative, negative_mask = read_null_text(prompts)
    component = load_component(_transformer_folder(teacher, "--teacher"))
    module, params = component.module, component.params
    settings = {"teacher": os.path.abspath(teacher), "prompts": os.path.abspath(prompts), "clips": clips,
                "block_frames": block_frames, "blocks": list(blocks), "guidance": guidance,
                "steps_per_level": steps_per_level, "shift": shift, "batch_size": batch_size,
                "records_per_shard": records_per_shard, "seed": seed, "timesteps": list(FEW_STEP_TIMESTEPS)}

    partial = out + ".partial"
    os.makedirs(partial, exist_ok=True)
    settings_path = os.path.join(partial, SETTINGS)
    if os.path.isfile(settings_path):
        with open(settings_path, encoding="utf-8") as f:
            earlier = json.load(f)
        if earlier != settings:
            changed = sorted(k for k in settings if earlier.get(k) != settings[k])
            raise ValueError(f"{partial} holds an interrupted run with other settings ({', '.join(changed)}); "
                             "re-run with its settings, or remove the folder to start over")
    else:
        _io.atomic_write_text(settings_path, json.dumps(settings, indent=2) + "\n")

    @jax.jit
    def trajectories(params, key, embeds, mask):
        b = embeds.shape[0]
        return teacher_trajectories(module, params, key, embeds, mask,
                                    jnp.broadcast_to(negative, (b, *negative.shape)),
                                    jnp.broadcast_to(negative_mask, (b, *negative_mask.shape)),
                                    shape=(b, *shape), blocks=blocks, guidance_scale=guidance,
                                    timesteps=FEW_STEP_TIMESTEPS, steps_per_level=steps_per_level, shift=shift)

    writer = LatentCacheWriter(partial, records_per_shard=records_per_shard, resumable=True)
    key = jax.random.key(seed)
    bar = tqdm(total=clips, initial=writer.count, desc="ode pairs", unit="clip", disable=not progress)
    while writer.count < clips:
        start = writer.count
        n = min(batch_size, clips - start)
        rows = [source.record(i % len(source)) for i in range(start, start + n)]
        embeds = np.stack([r["text_embeds"] for r in rows])
        mask = np.stack([r["text_mask"] for r in rows])
        states = np.asarray(trajectories(params, jax.random.fold_in(key, start // batch_size), embeds, mask))
        if not np.isfinite(states).all():
            raise FloatingPointError(f"the teacher's trajectories of clips {start}..{start + n - 1} hold NaN/inf")
        for row, clip in zip(rows, states):
            writer.write(latents=clip, text_embeds=row["text_embeds"], text_mask=row["text_mask"],
                         caption=row["caption"])
        bar.update(n)
    bar.close()
    metadata = writer.close(null_embeds=negative, null_mask=negative_mask,
                            config={"kind": "ode_trajectories", **settings})
    os.remove(settings_path)
    if os.path.lexists(out):
        shutil.rmtree(out)
    os.replace(partial, out)
    print(f"wrote {metadata['count']} teacher trajectories {tuple(metadata['latent_shape'])} to {out}")
    return metadata


def main(argv: list[str] | None = None) -> int:
    from sana_jax import _cli
    from sana_jax._cli import float_arg, positive_int_arg, seed_arg

    parser = argparse.ArgumentParser(prog="python -m sana_jax.training.ode_pairs", description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True, help="the teacher: a pipeline or transformer folder")
    parser.add_argument("--prompts", required=True, help="a latent cache whose captions and text embeddings are used")
    parser.add_argument("--out", required=True, help="the trajectory cache to write")
    parser.add_argument("--clips", type=positive_int_arg, required=True)
    parser.add_argument("--block-frames", type=positive_int_arg, required=True,
                        help="latent frames per block (the first takes the remainder)")
    parser.add_argument("--guidance", type=float_arg(0), required=True, help="the teacher's CFG weight")
    parser.add_argument("--steps-per-level", type=positive_int_arg, default=10,
                        help="Euler steps between consecutive recorded timesteps")
    parser.add_argument("--shift", type=float_arg(0, above=True), default=8.0,
                        help="shift of the grid the Euler steps are uniform on")
    parser.add_argument("--batch-size", type=positive_int_arg, default=16)
    parser.add_argument("--records-per-shard", type=positive_int_arg, default=256)
    parser.add_argument("--seed", type=seed_arg, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty --out that is not a latent cache (everything in it is deleted)")
    args = parser.parse_args(argv)

    def work():
        generate(args.teacher, args.prompts, args.out, clips=args.clips, block_frames=args.block_frames,
                 guidance=args.guidance, steps_per_level=args.steps_per_level, shift=args.shift,
                 batch_size=args.batch_size, records_per_shard=args.records_per_shard, seed=args.seed,
                 overwrite=args.overwrite)

    return _cli.run(work, interrupted=f"{args.out}.partial kept: re-run the same command to continue")


if __name__ == "__main__":
    sys.exit(main())
