"""Stages 2 and 3 of the distilled demo (LongSANA Self-Forcing with DMD, then long rollouts): the student from the
ODE stage rolls out its own blocks (4 steps each, a random exit step per block, no CFG) and learns from the frozen
demo teacher's guided score against a critic trained online on its samples.

    python train.py --config configs/demo_self_forcing.py --workdir runs/demo_sf              # the 5-frame clip
    python -m convert to-torch runs/demo_sf runs/student_sf --ema       # the shipped demo student (300 steps)
    python train.py --config configs/demo_self_forcing.py --workdir runs/demo_long \
        --config.model.init_from=runs/student_sf --config.objective.long_rollout_blocks=58 --config.total_steps=...
    python -m convert to-torch runs/demo_long runs/student --ema        # (stage 3: not used by the shipped one)

The scored clip is the teacher's training clip (5 latent frames, blocks 3 + 2); with long_rollout_blocks = N the
student first rolls out its first block and up to N more without gradient (58: a minute at 8 fps), then the scored
window: one clean context frame and two blocks. See README "The demo model".
"""

import ml_collections

from sana_jax.training import recipes


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "self_forcing"
    c.seed = 0
    c.total_steps = 300       # the shipped student's (README "The demo model"), 12.5 min on 2 CPU cores
    c.checkpoint_every = 100
    c.keep_checkpoints = 3
    c.log_every = 25
    c.batch_size = 16
    c.device_peak_flops = 0.0

    c.model = recipes.dit_model()
    c.model.init_from = "runs/student_ode"
    c.model.scan_layers = False
    c.model.remat_policy = "none"   # as the shipped student was trained (the default became dots_no_batch later)
    c.model.attention_implementation = "xla"

    c.objective = recipes.self_forcing(teacher="sana_jax/shapes/teacher", block_frames=2, guidance_scale=6.0,
                                       generator_every=5, long_rollout_blocks=0)
    c.optim = recipes.adamw(lr=2e-5, b1=0.0, warmup_steps=0, weight_decay=0.01, grad_clip=10.0, ema_decay=0.99)
    c.critic_optim = recipes.adamw(lr=1e-5, b1=0.0, warmup_steps=0, weight_decay=0.01, grad_clip=10.0)

    c.mesh = recipes.mesh(data=-1)
    c.mesh_rules = ()

    c.data = recipes.data()
    c.data.source = "latent_cache"
    c.data.path = "runs/demo_cache"
    c.data.seed = 0
    c.data.shuffle = True
    c.data.num_workers = 0
    c.data.prefetch = 2
    return c
