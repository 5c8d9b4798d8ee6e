"""A tiny Linear DiT on generated latents: the whole training loop on one CPU in about a minute.

    python train.py --config configs/tiny_smoke.py --workdir /tmp/tiny_smoke
    python train.py --config configs/tiny_smoke.py --workdir /tmp/tiny_smoke --config.total_steps=200   # resumes
"""

import ml_collections

from sana_jax.training import recipes


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "dit"
    c.seed = 0
    c.total_steps = 40
    c.checkpoint_every = 20
    c.keep_checkpoints = 2
    c.log_every = 5
    c.batch_size = 8                        # global
    c.device_peak_flops = 0.0               # per device, for MFU; 0 = unknown (not reported)

    c.model = recipes.dit_model()
    c.model.architecture = dict(            # diffusers SanaVideoTransformer3DModel config.json keys
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=16,
        mlp_ratio=2.5, sample_size=8, patch_size=[1, 2, 2], norm_elementwise_affine=False, norm_eps=1e-6,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    c.model.init_from = ""                  # a component folder to start from instead of random weights
    c.model.dtype = "float32"               # compute dtype; params stay fp32
    c.model.param_dtype = "float32"
    c.model.scan_layers = True
    c.model.remat_policy = "none"
    c.model.attention_implementation = "xla"

    c.objective = recipes.flow_matching()   # block_frames > 0: block-causal diffusion forcing
    c.optim = recipes.adamw(lr=1e-3, warmup_steps=5, grad_clip=1.0)

    c.mesh = recipes.mesh(data=-1, fsdp=1, tensor=1, sequence=1)
    c.mesh_rules = ()                       # () = sana_jax.training.mesh.DEFAULT_RULES

    c.data = recipes.data()
    c.data.source = "synthetic"
    c.data.seed = 0
    c.data.shuffle = True
    c.data.num_workers = 0
    c.data.prefetch = 2
    c.data.num_examples = 64
    c.data.latent_shape = (4, 8, 8, 4)      # latent frames, height, width, channels
    c.data.text_length = 8
    c.data.text_dim = 16
    return c
