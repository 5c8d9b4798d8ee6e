"""The SANA DC-AE (f32c32) trained to reconstruct video frames from a JSONL manifest of clips/images.

    python train.py --config configs/dc_ae_video.py --workdir /ckpt/dc_ae --config.data.path=/data/clips.jsonl
"""

import dataclasses

import ml_collections

from sana_jax.config import SANA_DC_AE_F32C32
from sana_jax.training import recipes


def _json_ready(value):
    if isinstance(value, (tuple, list)):
        return [_json_ready(v) for v in value]
    return value


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "autoencoder"
    c.seed = 0
    c.total_steps = 100_000
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.log_every = 20
    c.batch_size = 32
    c.device_peak_flops = 0.0

    c.model = recipes.autoencoder_model()
    c.model.architecture = {k: _json_ready(v) for k, v in dataclasses.asdict(SANA_DC_AE_F32C32).items()}
    c.model.init_from = ""
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"

    c.objective = recipes.reconstruction(l1_weight=1.0)

    c.optim = recipes.adamw(lr=1e-4, eps=1e-8, warmup_steps=1000, grad_clip=1.0)

    c.mesh = recipes.mesh(data=-1, fsdp=1, tensor=1, sequence=1)
    c.mesh_rules = ()

    c.data = recipes.data()
    c.data.source = "manifest"
    c.data.path = ""
    c.data.height = 256
    c.data.width = 256
    c.data.frames = 1                       # images, or 1-frame samples of clips
    c.data.fps = 16
    c.data.seed = 0
    c.data.shuffle = True
    c.data.num_workers = 4
    c.data.prefetch = 4
    return c
