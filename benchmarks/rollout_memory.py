"""Training memory of Self-Forcing's long rollouts: XLA's compiled memory analysis of one training step (generator
turn and critic turn in one program) at the demo model's size, for rollouts from the 5-frame clip to a minute.

    python benchmarks/rollout_memory.py [--teacher sana_jax/shapes/teacher] [--batch 16]

Prints a markdown table: rollout length (latent frames, seconds at 8 fps), the step's temporary bytes, its argument
bytes (params, optimiser state, EMA, batch) and the ratio of temporaries to the shortest rollout's. Nothing runs:
the step is lowered and compiled only.
"""

from __future__ import annotations

import argparse
import functools

import flax.linen as nn
import jax
import numpy as np

from sana_jax.shapes import DEMO_TEACHER
from sana_jax.training import recipes
from sana_jax.training.state import init_state, learning_rate
from sana_jax.training.step import train_step
from sana_jax.training.tasks import make_task


def step_memory(teacher: str, batch: int, long_blocks: int, text=(300, 64), clip=(5, 4, 4, 16)):
    config = _config(teacher, long_blocks)
    task = make_task(config, (np.zeros(text, np.float32), np.eye(1, text[0], dtype=np.int32)[0]))
    optimizer = task.optimizer()
    example = task.example_batch(batch, clip, text[0])
    state = jax.eval_shape(lambda: nn.meta.unbox(init_state(task, optimizer, example, 0, True)))
    step = jax.jit(functools.partial(train_step, task=task, optimizer=optimizer, schedule=learning_rate(config.optim),
                                     ema_decay=0.99))
    analysis = step.lower(state, example).compile().memory_analysis()
    return analysis.temp_size_in_bytes, analysis.argument_size_in_bytes


def _config(teacher: str, long_blocks: int):
    import ml_collections

    c = ml_collections.ConfigDict()
    c.task, c.seed, c.total_steps, c.batch_size = "self_forcing", 0, 1, 16
    c.checkpoint_every, c.keep_checkpoints = 1, 1
    c.model = recipes.dit_model(init_from=f"{teacher}/transformer", scan_layers=False, attention_implementation="xla")
    c.objective = recipes.self_forcing(teacher=teacher, block_frames=2, long_rollout_blocks=long_blocks)
    c.optim = recipes.adamw(ema_decay=0.99)
    c.critic_optim = recipes.adamw()
    c.data = recipes.data(source="synthetic", seed=0, num_examples=16, latent_shape=(5, 4, 4, 16), text_length=300,
                          text_dim=64)
    return c


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", default=DEMO_TEACHER)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    rows = []
    for blocks in (0, 8, 29, 58):
        temp, arguments = step_memory(args.teacher, args.batch, blocks)
        frames = 5 if blocks == 0 else 3 + 2 * (blocks + 2)
        rows.append((blocks, frames, temp, arguments))
    base = rows[0][2]
    print(f"Self-Forcing training step, demo model, batch {args.batch}, {jax.devices()[0].platform}")
    print("| long_rollout_blocks | longest rollout (latent frames / s at 8 fps) | temporaries (MB) | arguments (MB) "
          "| temporaries vs the 5-frame clip |")
    print("|---|---|---|---|---|")
    for blocks, frames, temp, arguments in rows:
        print(f"| {blocks} | {frames} / {(4 * (frames - 1) + 1) / 8:.1f} | {temp / 1e6:.1f} | {arguments / 1e6:.1f} "
              f"| {temp / base:.2f}x |")


if __name__ == "__main__":
    main()
