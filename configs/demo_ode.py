"""Stage 1 of the distilled demo (LongSANA ODE initialisation): the block-causal student, started from the demo
teacher's weights, regressed onto the teacher's ODE trajectories.

    python -m sana_jax.training.ode_pairs --teacher sana_jax/shapes/teacher --prompts runs/demo_cache \
        --out runs/demo_ode_pairs --clips 1024 --block-frames 2 --guidance 6 --batch-size 32
    python train.py --config configs/demo_ode.py --workdir runs/demo_ode
    python -m convert to-torch runs/demo_ode runs/student_ode

Blocks of 2 latent frames (the first takes the remainder: 3 + 2), each at its own state of the teacher's
trajectory (t = 1000, 960, 889, 727, or clean context); loss: MSE of the predicted x0 to the trajectory's end.
See README "The demo model".
"""

import ml_collections

from sana_jax.training import recipes


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "ode_init"
    c.seed = 0
    c.total_steps = 800
    c.checkpoint_every = 200
    c.keep_checkpoints = 1
    c.log_every = 50
    c.batch_size = 16
    c.device_peak_flops = 0.0

    c.model = recipes.dit_model()
    c.model.init_from = "sana_jax/shapes/teacher/transformer"   # the teacher's weights
    c.model.scan_layers = False
    c.model.remat_policy = "none"   # as the shipped student was trained (the default became dots_no_batch later)
    c.model.attention_implementation = "xla"

    c.objective = recipes.ode_init(block_frames=2, max_frame_offset=56)
    c.optim = recipes.adamw(lr=1e-4, warmup_steps=100, weight_decay=0.01, grad_clip=10.0)

    c.mesh = recipes.mesh(data=-1)
    c.mesh_rules = ()

    c.data = recipes.data()
    c.data.source = "latent_cache"
    c.data.path = "runs/demo_ode_pairs"
    c.data.seed = 0
    c.data.shuffle = True
    c.data.num_workers = 0
    c.data.prefetch = 2
    return c
