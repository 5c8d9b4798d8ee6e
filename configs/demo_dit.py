"""Stage 2 of the demo model: a small Linear DiT trained block-causally on latents of the shapes world.

    python train.py --config configs/demo_dit.py --workdir runs/demo_dit        # latent cache in runs/demo_cache
    python -m convert to-torch runs/demo_dit runs/dit --ema                      # the shipped weights: step 8000 EMA

Latents from the demo autoencoder (16 channels, 4 x 4 per latent frame), captions encoded by the demo text
encoder (64-dim, 300 tokens), clips of 17 frames = 5 latent frames. Block-causal diffusion forcing with blocks of
2 latent frames (the first absorbs the remainder: 3 + 2), as `sample.py --stream` samples them; random
RoPE time offsets so blocks far into a long video sit at positions seen in training; 10% image-to-video samples.
About 45 minutes on 2 CPU cores (3 steps/s). Held-out accuracy (EMA, guidance 4): colour and shape came first
(step 3000, 12 videos: colour 0.83, shape 0.58, direction 0.08), direction last (step 6000, 48 videos: 1.00 /
0.90 / 1.00); step 8000 with guidance 6 is what ships.
See README "The demo model".
"""

import ml_collections

from sana_jax.training import recipes


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "dit"
    c.seed = 0
    c.total_steps = 8000
    c.checkpoint_every = 1000
    c.keep_checkpoints = 1
    c.log_every = 50
    c.batch_size = 16
    c.device_peak_flops = 0.0

    c.model = recipes.dit_model()
    c.model.architecture = dict(            # diffusers SanaVideoTransformer3DModel config.json keys
        in_channels=16, out_channels=16, num_attention_heads=4, attention_head_dim=32, num_layers=6,
        num_cross_attention_heads=4, cross_attention_head_dim=32, cross_attention_dim=128, caption_channels=64,
        mlp_ratio=2.5, sample_size=4, patch_size=[1, 1, 1], norm_elementwise_affine=False, norm_eps=1e-6,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=128)
    c.model.init_from = ""
    c.model.dtype = "float32"
    c.model.param_dtype = "float32"
    c.model.scan_layers = False          # unrolled: ~15% faster steps on CPU
    c.model.remat_policy = "none"
    c.model.attention_implementation = "xla"

    c.objective = recipes.flow_matching(
        flow_shift=3.0, caption_dropout=0.1, i2v_prob=0.1, block_frames=2,
        block_modes=dict(teacher_forcing_clean=0.5, same_t=0.25, incremental=0.25))
    c.objective.max_frame_offset = 56       # latent frames: a 30 s clip at 8 fps has 61
    c.optim = recipes.adamw(lr=5e-4, warmup_steps=200, grad_clip=1.0, ema_decay=0.999)

    c.mesh = recipes.mesh(data=-1, fsdp=1, tensor=1, sequence=1)
    c.mesh_rules = ()

    c.data = recipes.data()
    c.data.source = "latent_cache"
    c.data.path = "runs/demo_cache"
    c.data.seed = 0
    c.data.shuffle = True
    c.data.num_workers = 0
    c.data.prefetch = 2
    return c
