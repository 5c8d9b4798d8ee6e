"""SANA-Video 2B at 480p: the published recipe (AdamW lr 5e-5, eps 1e-10, no weight decay, 500 warm-up steps,
gradient clip 0.1, logit-normal timesteps with flow shift 3, caption dropout 0.1), bf16 compute over fp32 master
params, scanned layers with full remat, FSDP over every device.

Precompute the latent cache once (Wan VAE latents + Gemma2 embeddings of a JSONL manifest), then train:

    python -m sana_jax.training.precompute --pipeline SANA-Video_2B_480p_diffusers --manifest data.jsonl \\
        --out /data/latents_480p --height 480 --width 832 --frames 81 --fps 16
    python train.py --config configs/sana_video_2b_480p.py --workdir /ckpt/sana_video_480p \\
        --config.data.path=/data/latents_480p --config.model.init_from=SANA-Video_2B_480p_diffusers/transformer
"""

import dataclasses

import ml_collections

from sana_jax.config import SANA_VIDEO_2B_480P
from sana_jax.training import recipes


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "dit"
    c.seed = 0
    c.total_steps = 100_000
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.log_every = 20
    c.batch_size = 64                       # global; one 81-frame video per GPU on 64 H100s in the paper's setup
    c.device_peak_flops = 989e12            # H100 SXM dense bf16; set for your chip (v5p: 459e12)

    c.model = recipes.dit_model()
    arch = dataclasses.asdict(SANA_VIDEO_2B_480P)
    c.model.architecture = {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}
    c.model.init_from = ""                  # e.g. SANA-Video_2B_480p_diffusers/transformer to fine-tune
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.model.scan_layers = True
    c.model.remat_policy = "full"
    c.model.attention_implementation = "auto"

    c.objective = recipes.flow_matching()
    c.optim = recipes.adamw()

    c.mesh = recipes.mesh(data=1, fsdp=-1, tensor=1, sequence=1)
    c.mesh_rules = ()

    c.data = recipes.data()
    c.data.source = "latent_cache"
    c.data.path = ""                        # the precompute output folder
    c.data.seed = 0
    c.data.shuffle = True
    c.data.num_workers = 4
    c.data.prefetch = 4
    return c
