"""python train.py --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]

Trains what the config describes (see configs/); re-running with the same --workdir resumes from its latest
checkpoint (an unreadable one is skipped for the newest readable one). Multi-host: start one process per host with
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID set (or on a Cloud TPU slice / SLURM job, where they
are detected).

Exit status: 0 when the run reached total_steps or was stopped by SIGTERM (after saving a checkpoint); 130 when
stopped by SIGINT / Ctrl-C (after saving a checkpoint; a second Ctrl-C stops without saving); 1 for a non-finite
loss; 2 for bad input (a config file or value, a workdir in use by another run, no readable checkpoint), with one
``error: ...`` line and no traceback.
"""

import sys

if __name__ == "__main__":  # before anything else: restart under the host-memory setting (sana_jax/_host.py)
    from sana_jax._host import reexec_with_tuned_malloc

    reexec_with_tuned_malloc()

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)", lock_config=True)
flags.DEFINE_string("workdir", None, "run folder: checkpoints/, metrics.jsonl, tensorboard/, config.json")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"], "join a multi-process run (jax.distributed)")
flags.mark_flags_as_required(["config", "workdir"])

EXIT_BAD_INPUT = 2
EXIT_SIGINT = 130  # 128 + SIGINT, as a shell reports a process ended by Ctrl-C


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:  # orbax logs every save at INFO; -v 0 brings it back
        logging.set_verbosity(logging.WARNING)
    config = _loaded_config()
    from sana_jax.config import ConfigError
    from sana_jax.training.checkpoint import CheckpointMismatchError, CorruptCheckpointError, quiet_unraisable_hook
    from sana_jax.training.config import TrainingConfigError
    from sana_jax.training.data.config import DataConfigError
    from sana_jax.training.trainer import NonFiniteLoss, train
    from sana_jax.training.workdir_lock import WorkdirLockedError

    # The reads an unreadable checkpoint's restore abandons report themselves until the process ends.
    sys.unraisablehook = quiet_unraisable_hook(sys.unraisablehook)
    try:
        summary = train(config, flags.FLAGS.workdir, distributed_mode=flags.FLAGS.distributed)
    except NonFiniteLoss as e:
        sys.exit(f"error: {e}")
    except (TrainingConfigError, DataConfigError, ConfigError, WorkdirLockedError, CorruptCheckpointError,
            CheckpointMismatchError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        print("error: stopped by a second SIGINT, without saving the step reached", file=sys.stderr)
        sys.exit(EXIT_SIGINT)
    if summary["stopped_by"] == "SIGINT":
        sys.exit(EXIT_SIGINT)


def _loaded_config():
    """The config; a file that could not be loaded stops here (config_flags defers its error to first use)."""
    config = flags.FLAGS.config
    try:
        config.get  # noqa: B018 -- any attribute of a config that failed to load raises its error
    except OSError as e:
        cause = e.__cause__ or e
        detail = str(cause).strip().splitlines()[-1].strip()
        _fail(f"--config={flags.FLAGS['config'].config_filename}: cannot load it ({detail})")
    return config


def _parse_flags(argv):
    """absl's parsing, with an override of a key the config file does not have as an ``error:`` line naming the
    key, its section and the nearest valid key."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as e:
        detail = str(e.args[0] if e.args else e)
        if len(detail) > 1 and detail[0] == detail[-1] and detail[0] in "'\"":  # a key's repr
            detail = detail[1:-1]
        for old, new in (("\\n", " "), ("\n", " "), ("\\'", "'")):
            detail = detail.replace(old, new)
        _fail(f"a --config.KEY=VALUE override names a key the config file does not have: "
              f"{_unknown_override(argv, detail)}")


def _unknown_override(argv, detail: str) -> str:
    """The override that failed (ml_collections' error names only its last unknown part: ``'lrr' Did you mean
    "lr" ...``) as ``optim.lrr: unknown key in section 'optim'; the nearest valid key is optim.lr``."""
    from sana_jax.training.config import SECTIONS, unknown_key_message, valid_keys

    missing = detail.split()[0].strip("'\"") if detail.split() else ""
    for arg in argv[1:]:
        if not arg.startswith("--config."):
            continue
        parts = arg[len("--config."):].split("=", 1)[0].split(".")
        if missing not in parts:
            continue
        i = parts.index(missing)
        section = ".".join(parts[:i])
        if section == "" or section in SECTIONS:
            valid = valid_keys(section)
            if missing in valid:  # a valid key the experiment file leaves out
                return (f"{'.'.join(parts[:i + 1])}: a valid key of the {section or 'top level'} section that the "
                        f"experiment file does not set; set it in the file to override it")
            return unknown_key_message(section, missing, valid)
        return f"{'.'.join(parts[:i + 1])}: {detail.strip()}"
    return detail.strip()


def _fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    try:
        app.run(main, flags_parser=_parse_flags)
    except KeyboardInterrupt:  # Ctrl-C before training started (imports, flag parsing): nothing to save
        print("error: stopped by SIGINT before training started", file=sys.stderr)
        sys.exit(EXIT_SIGINT)
