"""Stage 1 of the demo model: a small Wan-architecture video autoencoder trained on the shapes world.

    python train.py --config configs/demo_autoencoder.py --workdir runs/demo_autoencoder \
        --config.data.frames=17 --config.optim.lr=0.001 --config.total_steps=1076
    python train.py --config configs/demo_autoencoder.py --workdir runs/demo_autoencoder \
        --config.data.frames=5 --config.optim.lr=0.001 --config.total_steps=3360
    python train.py --config configs/demo_autoencoder.py --workdir runs/demo_autoencoder \
        --config.data.frames=9 --config.optim.lr=0.001 --config.total_steps=6000
    python train.py --config configs/demo_autoencoder.py --workdir runs/demo_autoencoder    # 17 frames, to 7500

Then the decoder alone, for long causal decodes (a stream decodes a minute as one causal sequence; the encoder is
frozen and makes each latent frame in a 17-frame window, as the DiT's training latents were made):

    python train.py --config configs/demo_autoencoder.py --workdir runs/demo_vae_long \
        --config.model.init_from=runs/parts/vae --config.objective.decoder_window=5 --config.data.frames=97 \
        --config.optim.lr=2e-4 --config.optim.warmup_steps=50 --config.total_steps=1500

32 x 32 pixels; a clip of 1 + 4k frames -> 1 + k latent frames of 4 x 4 x 16 (8x spatial, 4x temporal, as the
published Wan VAE); deterministic (the posterior mean is the latent). The four commands are the shipped model's
history (each resumes the last). Shorter clips are cheaper, but a causal video autoencoder only learns the latent
frames its clips reach: after 5-frame clips (one temporal group) the later groups of a 17-frame clip drifted in
colour, after 9-frame clips the 4th and 5th latent frames still did, hence the last phase on whole 17-frame clips.
About 40 minutes on 2 CPU cores. See README "The demo model".
"""

import ml_collections

from sana_jax.shapes import world as shapes
from sana_jax.training import recipes

Z_DIM = 16


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "autoencoder"
    c.seed = 0
    c.total_steps = 7500
    c.checkpoint_every = 500
    c.keep_checkpoints = 1
    c.log_every = 50
    c.batch_size = 4
    c.device_peak_flops = 0.0

    c.model = recipes.autoencoder_model()
    c.model.class_name = "AutoencoderKLWan"
    c.model.architecture = dict(            # diffusers AutoencoderKLWan config.json keys
        base_dim=16, z_dim=Z_DIM, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
        temperal_downsample=[False, True, True], latents_mean=[0.0] * Z_DIM, latents_std=[1.0] * Z_DIM)
    c.model.init_from = ""
    c.model.dtype = "float32"
    c.model.param_dtype = "float32"

    c.objective = recipes.reconstruction(l1_weight=1.0)
    c.objective.latent_l2_weight = 1e-4     # keeps the latent scale bounded (no KL: the latent is the mean)
    c.objective.foreground_weight = 10.0    # the object covers ~10% of a frame: without this the loss settles on
                                            # reconstructing the background alone

    c.optim = recipes.adamw(lr=5e-4, eps=1e-8, warmup_steps=100, grad_clip=1.0, weight_decay=0.0)

    c.mesh = recipes.mesh(data=-1, fsdp=1, tensor=1, sequence=1)
    c.mesh_rules = ()

    c.data = recipes.data()
    c.data.source = "shapes"
    c.data.seed = 0
    c.data.shuffle = True
    c.data.num_workers = 0
    c.data.prefetch = 2
    c.data.num_examples = 100_000
    c.data.height = shapes.HEIGHT
    c.data.width = shapes.WIDTH
    c.data.frames = shapes.FRAMES
    return c
