"""The demo model's build steps around ``train.py`` (README "The demo model" lists the whole recipe).

    python -m sana_jax.shapes.build text-encoder PARTS     # caption-vocabulary tokenizer + tiny frozen Gemma2
    python -m sana_jax.shapes.build vae RUN PARTS           # export the autoencoder run + latent statistics
    python -m sana_jax.shapes.build pipeline PARTS OUT (--transformer FOLDER | --dit-config configs/demo_dit.py)
    python -m sana_jax.shapes.build cache PIPELINE OUT [--clips 4096] [--frames 17]
    python -m sana_jax.shapes.build student TEACHER_PIPELINE STUDENT_TRANSFORMER OUT   # the distilled pipeline
    python -m sana_jax.shapes.build teacher TEACHER_PIPELINE TEACHER_TRANSFORMER OUT   # a fine-tuned teacher

PARTS is a working folder holding ``tokenizer/``, ``text_encoder/`` and ``vae/``. ``pipeline`` assembles a
diffusers ``SanaVideoPipeline`` folder from them plus a transformer (a component folder, e.g. exported with
``python -m convert to-torch RUN FOLDER --ema``; or random weights from the DiT config given as ``--dit-config``,
which is what the latent cache needs before the DiT is trained), the flow DPM-Solver++ scheduler and
``sample_defaults.json``. The steps that build PyTorch-format folders (text-encoder, pipeline) need the test extras
(torch, diffusers); they import them when they run, so the rest of this module needs none.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from sana_jax import _io
from sana_jax.shapes import world

SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")
TEXT_ENCODER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=32, max_position_embeddings=1024, sliding_window=512)
FLOW_SHIFT = 3.0
# The demo's native sampling settings (written to the pipeline folder as sample_defaults.json). decode_window: the
# demo VAE was trained on 17-frame clips (5 latent frames) and takes an object's colour from the first one, so a
# long stream decodes each block of 2 after latent frame 0 and the 2 before the block: that clip exactly (one
# causal decode of a minute reads the right colour in 4-89% of its windows, this one in 100%; README).
SAMPLE_DEFAULTS = {"height": world.HEIGHT, "width": world.WIDTH, "frames": world.FRAMES, "steps": 20,
                   "guidance": 6.0, "fps": world.FPS, "stream": True, "block_frames": 2, "sampler": "dpm",
                   "decode_window": 2}


def build_tokenizer():
    """A word-level tokenizer over the captions' words (any other word is <unk>), BOS-prefixed like Gemma's."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate([*SPECIALS, *world.vocabulary()])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
                                   pad_token="<pad>", padding_side="right")


def build_text_encoder(parts: str, seed: int = 0) -> None:
    """PARTS/tokenizer and PARTS/text_encoder: a frozen random Gemma2 (transformers layout)."""
    import torch
    from transformers import Gemma2Config, Gemma2Model

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = Gemma2Model(Gemma2Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, bos_token_id=2,
                                     **TEXT_ENCODER)).eval()
    tokenizer.save_pretrained(os.path.join(parts, "tokenizer"))
    model.save_pretrained(os.path.join(parts, "text_encoder"))
    print(f"wrote {parts}/tokenizer ({len(tokenizer)} tokens) and {parts}/text_encoder "
          f"({sum(p.numel() for p in model.parameters()):,} params)")


def latent_statistics(vae, clips: int, seed: int = 1, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the un-normalised posterior means over ``clips`` training clips."""
    import jax.numpy as jnp

    examples = world.ShapesExamples(seed=seed, num_examples=clips)
    cfg = vae.config
    mean, std = np.asarray(cfg.latents_mean, np.float64), np.asarray(cfg.latents_std, np.float64)
    zs = []
    for start in range(0, clips, batch):
        video = examples.collate([examples[i] for i in range(start, min(clips, start + batch))])["video"]
        z = np.asarray(vae.encode(jnp.asarray(video)), np.float64) * std + mean   # undo the current normalisation
        zs.append(z.reshape(-1, z.shape[-1]))
    z = np.concatenate(zs)
    return z.mean(0), z.std(0)


def build_vae(run: str, parts: str, clips: int = 512) -> None:
    """PARTS/vae: the autoencoder run's weights (diffusers layout) with latents_mean/std measured on the world."""
    from sana_jax import load_component
    from sana_jax.training.export import export_run

    out = os.path.join(parts, "vae")
    export_run(run, out, format="diffusers")
    vae = load_component(out)
    mean, std = latent_statistics(vae, clips)
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    config["latents_mean"] = [round(float(m), 6) for m in mean]
    config["latents_std"] = [round(float(s), 6) for s in std]
    _io.atomic_write_text(os.path.join(out, "config.json"), json.dumps(config, indent=2) + "\n")
    load_component(out)   # the folder loads as written
    print(f"wrote {out}: latent std per channel {np.round(std, 3).tolist()}")


def dit_architecture(config_path: str) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_dit_config", config_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.get_config().model.architecture)


def build_pipeline(parts: str, out: str, transformer: str | None = None, dit_config: str | None = None,
                   seed: int = 0) -> None:
    """A diffusers SanaVideoPipeline folder at ``out`` (replaced atomically) with sample_defaults.json: the
    ``transformer`` component folder, or (exactly one of the two) random weights of the ``dit_config`` file's
    architecture (an ml_collections experiment file such as configs/demo_dit.py)."""
    if (transformer is None) == (dit_config is None):
        raise ValueError(f"transformer={transformer!r}, dit_config={dit_config!r}: expected exactly one "
                         "(--transformer FOLDER, or --dit-config FILE for random weights)")
    import torch
    from diffusers import AutoencoderKLWan, DPMSolverMultistepScheduler, SanaVideoPipeline, SanaVideoTransformer3DModel
    from transformers import AutoTokenizer, Gemma2Model

    if transformer is None:
        torch.manual_seed(seed)
        model = SanaVideoTransformer3DModel(**dit_architecture(dit_config))
    else:
        model = SanaVideoTransformer3DModel.from_pretrained(transformer)
    pipe = SanaVideoPipeline(
        tokenizer=AutoTokenizer.from_pretrained(os.path.join(parts, "tokenizer")),
        text_encoder=Gemma2Model.from_pretrained(os.path.join(parts, "text_encoder")).eval(),
        vae=AutoencoderKLWan.from_pretrained(os.path.join(parts, "vae")).eval(),
        transformer=model.eval(),
        scheduler=DPMSolverMultistepScheduler(flow_shift=FLOW_SHIFT, use_flow_sigmas=True,
                                              prediction_type="flow_prediction"))
    with _io.atomic_directory(out) as tmp:
        pipe.save_pretrained(tmp)
        with open(os.path.join(tmp, "sample_defaults.json"), "w") as f:
            json.dump(SAMPLE_DEFAULTS, f, indent=2)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"wrote {out} ({size / 1e6:.1f} MB)")


def build_cache(pipeline: str, out: str, clips: int, frames: int, seed: int = 2) -> None:
    """A latent cache of ``clips`` training clips of ``frames`` frames for the DiT (configs/demo_dit.py)."""
    from sana_jax import SanaVideoPipeline
    from sana_jax.training.data.precompute import write_latent_cache

    pipe = SanaVideoPipeline.from_pretrained(pipeline)
    examples = world.ShapesExamples(seed=seed, num_examples=clips, frames=frames)
    pipe.latent_shape(1, world.HEIGHT, world.WIDTH, frames)
    write_latent_cache(examples, pipe, out, batch_size=32, decode_threads=1,
                       config={"source": "shapes", "seed": seed, "clips": clips, "frames": frames,
                               "pipeline": os.path.abspath(pipeline)})


# The distilled student's native settings: LongSANA's 4-step sampler, no CFG, streamed in blocks of 2.
STUDENT_DEFAULTS = {**SAMPLE_DEFAULTS, "steps": 4, "guidance": 1.0, "sampler": "few_step"}


def build_student(teacher: str, transformer: str, out: str) -> None:
    """The distilled pipeline at ``out`` (replaced atomically, JAX format): the teacher pipeline folder's text
    encoder, tokenizer, VAE and scheduler, the student ``transformer`` (a component folder, e.g. exported with
    ``python -m convert to-torch RUN FOLDER --ema``: a SanaVideoCausalTransformer3DModel) and the few-step
    sample_defaults.json."""
    _with_transformer(teacher, transformer, out, "SanaVideoCausalTransformer3DModel", STUDENT_DEFAULTS,
                      "the block-causal student (SanaVideoCausalTransformer3DModel, as a self_forcing run exports it)")


def build_teacher(teacher: str, transformer: str, out: str) -> None:
    """A teacher pipeline at ``out`` (replaced atomically, JAX format): the ``teacher`` pipeline folder with its
    transformer replaced by ``transformer`` (e.g. a fine-tuning run exported with ``convert to-torch --ema``), the
    teacher's sample_defaults.json kept (if it has one)."""
    _with_transformer(teacher, transformer, out, "SanaVideoTransformer3DModel", None,
                      "a teacher DiT (SanaVideoTransformer3DModel, as a DiT training run exports it)")


def _with_transformer(pipeline: str, transformer: str, out: str, class_name: str, defaults: dict | None,
                      expected: str) -> None:
    """``pipeline``'s folder with ``transformer`` (a ``class_name`` component) in it, in the JAX format, and
    ``defaults`` as its sample_defaults.json (None: the pipeline's own, copied with the rest)."""
    import shutil

    from sana_jax.components import load_component, save_component

    model = load_component(transformer)
    if model.class_name != class_name:
        raise ValueError(f"--transformer {transformer}: a {model.class_name}; expected {expected}")
    with open(os.path.join(pipeline, "model_index.json")) as f:
        index = json.load(f)
    index["transformer"] = ["diffusers", model.class_name]
    written = {"model_index.json": index, **({} if defaults is None else {"sample_defaults.json": defaults})}
    with _io.atomic_directory(out) as tmp:
        for name in os.listdir(pipeline):
            if name in ("transformer", ".sana_jax_conversion.json", *written):
                continue
            src = os.path.join(pipeline, name)
            (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(tmp, name))
        save_component(model, os.path.join(tmp, "transformer"), format="jax")
        for name, data in written.items():
            with open(os.path.join(tmp, name), "w") as f:
                json.dump(data, f, indent=2)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"wrote {out} ({size / 1e6:.1f} MB)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sana_jax.shapes.build", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("text-encoder")
    p.add_argument("parts")
    p = sub.add_parser("vae")
    p.add_argument("run")
    p.add_argument("parts")
    p.add_argument("--clips", type=int, default=512, help="clips measured for latents_mean / latents_std")
    p = sub.add_parser("pipeline")
    p.add_argument("parts")
    p.add_argument("out")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--transformer", default=None, help="a transformer component folder")
    weights.add_argument("--dit-config", default=None,
                         help="random weights of this DiT config's architecture (e.g. configs/demo_dit.py)")
    p = sub.add_parser("student")
    p.add_argument("teacher", help="the teacher pipeline folder (its text encoder, VAE, scheduler are reused)")
    p.add_argument("transformer", help="the distilled student's transformer folder")
    p.add_argument("out")
    p = sub.add_parser("teacher")
    p.add_argument("teacher", help="the teacher pipeline folder (everything but its transformer is reused)")
    p.add_argument("transformer", help="the new teacher DiT's transformer folder")
    p.add_argument("out")
    p = sub.add_parser("cache")
    p.add_argument("pipeline")
    p.add_argument("out")
    p.add_argument("--clips", type=int, default=4096)
    p.add_argument("--frames", type=int, default=world.FRAMES)
    args = parser.parse_args(argv)
    if args.stage == "text-encoder":
        build_text_encoder(args.parts)
    elif args.stage == "vae":
        build_vae(args.run, args.parts, args.clips)
    elif args.stage == "pipeline":
        build_pipeline(args.parts, args.out, args.transformer, args.dit_config)
    elif args.stage == "student":
        build_student(args.teacher, args.transformer, args.out)
    elif args.stage == "teacher":
        build_teacher(args.teacher, args.transformer, args.out)
    else:
        build_cache(args.pipeline, args.out, args.clips, args.frames)


if __name__ == "__main__":
    main()
