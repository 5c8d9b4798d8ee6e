"""python train.py --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]

Trains what the config describes (see configs/); re-running with the same --workdir resumes from its latest
checkpoint. Multi-host: start one process per host with JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
JAX_PROCESS_ID set (or on a Cloud TPU slice / SLURM job, where they are detected).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)", lock_config=True)
flags.DEFINE_string("workdir", None, "run folder: checkpoints/, metrics.jsonl, tensorboard/, config.json")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"], "join a multi-process run (jax.distributed)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:  # orbax logs every save at INFO; -v 0 brings it back
        logging.set_verbosity(logging.WARNING)
    from sana_jax.training.trainer import NonFiniteLoss, train

    try:
        train(flags.FLAGS.config, flags.FLAGS.workdir, distributed_mode=flags.FLAGS.distributed)
    except NonFiniteLoss as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main)
