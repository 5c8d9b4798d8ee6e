"""Orbax checkpoints of a training run: the train state and the data iterator's state, saved together per step.

Layout under ``directory`` (orbax's)::

    <step>/state/                               the train state pytree (tensorstore/OCDBT)
    <step>/data_state/process_<i>-of-<n>.json   each process's data iterator state
    <step>.orbax-checkpoint-tmp[-<time>]/       a save in progress, or one interrupted before it finished

A save is written under the temporary name and renamed to ``<step>`` only when every process has finished (on
``gs://``, which cannot rename atomically, orbax marks a finished step with ``commit_success.txt`` instead), so a run
killed mid-save leaves a folder that is never listed as a step. The next writing ``Checkpointer`` on the directory
deletes such leftovers; a ``read_only`` one leaves them, since they may be a live save of another process.

Multi-host: every process constructs the ``Checkpointer`` on the same ``directory`` (a filesystem they all see, e.g.
``gs://``) and calls ``save``/``restore``/``wait`` at the same steps. Orbax coordinates them: each process writes
the shards of ``state`` it holds, process 0 writes the metadata and renames the folder. The data state is written by
every process into its own file, because each host reads its own shard of the data; a restore with a different
process count than the save raises (``restore_data_state=False`` restores the model state alone).

Async saving: ``save`` returns once the arrays are copied to host memory (the training loop may then donate or
overwrite them); the write to storage continues in a background thread. A second ``save`` first waits for the
previous one. Call ``wait()`` (or ``close()``, or use the ``Checkpointer`` as a context manager) before the process
exits, or the last checkpoint stays a temporary folder.

Corruption: a step whose files cannot be read (an emptied ``_METADATA``, a truncated or garbled array file of the
OCDBT store, a removed ``state`` folder, an empty data-state file) raises ``CorruptCheckpointError`` naming the step
and the file at fault, as precisely as the error allows (an array file's damage is reported by the parameter whose
read failed, inside the store ``<step>/state``). Errors that may pass (a storage service that is unavailable, a
permission denied) are raised as they are: an older step is no remedy for them.

Preemption: under ``jax.distributed`` the JAX preemption service turns a SIGTERM on any host into a step that all
hosts agree on; ``should_save`` is True at that step and ``reached_preemption`` tells the loop to save, ``wait()``
and exit. In a single process without ``jax.distributed`` there is no such service: the trainer's own SIGTERM
handler should set a flag, and the loop then calls ``save(step, ..., force=True)``, ``wait()`` and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from typing import Any, Iterator, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

_STATE = "state"
_DATA_STATE = "data_state"
_MAX_LISTED = 50  # mismatching parameters named in an error; a changed width touches hundreds


class CheckpointMismatchError(ValueError):
    """A checkpoint whose train state does not have the shapes, dtypes or parameters the model expects."""


class CorruptCheckpointError(ValueError):
    """Checkpoint ``step`` cannot be read: ``path`` (a file, or the folder of the part at fault) is missing, empty,
    truncated or garbled, as ``reason`` says. ``hint``: what to do about it, appended to the message."""

    def __init__(self, step: int, path: Any, reason: str, hint: str = ""):
        self.step, self.path, self.reason, self.hint = step, str(path), reason, hint
        super().__init__(f"checkpoint step {step} is unreadable: {self.path}: {reason}" + (f". {hint}" if hint else ""))

    def with_hint(self, hint: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(self.step, self.path, self.reason, hint)


class Checkpointer:
    """Saves every ``every`` steps, keeps the latest ``keep`` checkpoints, restores onto any mesh.

    ``state``: a pytree of ``jax.Array`` (a train state dataclass: params, optimiser state, step, PRNG key, EMA),
    sharded in any way. ``data_state``: a JSON-serialisable dict (the data iterator's state on this process).
    ``read_only``: for a process that only restores (evaluation, sampling) from a directory a training run may be
    writing: it neither saves nor deletes, in particular not the temporary folder of a save in progress.
    """

    def __init__(self, directory: str | os.PathLike, *, every: int, keep: int, async_save: bool = True,
                 read_only: bool = False):
        if every < 1 or keep < 1:
            raise ValueError(f"Checkpointer needs every >= 1 and keep >= 1, got every={every}, keep={keep}")
        directory = str(directory)
        self.directory = epath.Path(directory if "://" in directory else os.path.abspath(directory))
        self.every = every
        self.keep = keep
        self.read_only = read_only
        self._data_file = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        self._replaceable: set[int] = set()

        # Every process writes its own data-state file (orbax's JSON handler otherwise writes on process 0 only).
        data_handler = ocp.JsonCheckpointHandler(
            filename=self._data_file,
            multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=None))
        state_handler = ocp.StandardCheckpointHandler()
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        registry.add(_STATE, ocp.args.StandardSave, state_handler)
        registry.add(_STATE, ocp.args.StandardRestore, state_handler)
        registry.add(_DATA_STATE, ocp.args.JsonSave, data_handler)
        registry.add(_DATA_STATE, ocp.args.JsonRestore, data_handler)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            enable_async_checkpointing=async_save,
            save_interval_steps=0 if read_only else 1,  # orbax's own decision is unused (save passes force=True)
            cleanup_tmp_directories=not read_only,
            create=not read_only,
            read_only=read_only)
        self._manager = ocp.CheckpointManager(self.directory, options=options, handler_registry=registry)

    # -- saving ------------------------------------------------------------------------------------------------

    def reached_preemption(self, step: int) -> bool:
        """True (on every process) at the step the JAX preemption service chose after a SIGTERM; False without
        ``jax.distributed``. Call it at every step on every process."""
        return self._manager.reached_preemption(step)

    def should_save(self, step: int) -> bool:
        return step % self.every == 0 or self.reached_preemption(step)

    def replace_when_saved(self, step: int) -> None:
        """Lets ``save(step)`` overwrite the step on disk (one found corrupt); other steps are never rewritten.
        Call it on every process."""
        self._replaceable.add(int(step))

    def save(self, step: int, state: Any, data_state: Mapping[str, Any], *, force: bool = False) -> bool:
        """Saves ``state`` and ``data_state`` as checkpoint ``step`` when ``should_save(step)`` or ``force``; a step
        already on disk is not rewritten (unless ``replace_when_saved(step)`` was called: the corrupt step is
        deleted first). Returns whether a save was started (it may still be writing: see ``wait``)."""
        if self.read_only:
            raise ValueError(f"Checkpointer on {self.directory} was opened with read_only=True: it does not save")
        if not (force or self.should_save(step)):
            return False
        if step in self._manager.all_steps():
            if step not in self._replaceable:
                return False
            self._manager.wait_until_finished()
            self._manager.delete(step)
        self._replaceable.discard(step)
        # Serialised now: a bad value fails here, not in the background thread, and the snapshot cannot change if
        # the caller mutates its dict while the save is still writing.
        try:
            data_state = json.loads(json.dumps(dict(data_state), allow_nan=False))
        except (TypeError, ValueError) as e:
            raise TypeError(f"data_state for step {step} is not JSON-serialisable: {e}") from e
        return self._manager.save(step, force=True, args=ocp.args.Composite(**{
            _STATE: ocp.args.StandardSave(state), _DATA_STATE: ocp.args.JsonSave(data_state)}))

    def wait(self) -> None:
        """Blocks until the save in progress (if any) is on disk; raises its error if it failed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- restoring ---------------------------------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        if self.read_only:  # another process writes this directory: list it afresh
            self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def restore(self, abstract_state: Any, step: int | None = None, *,
                restore_data_state: bool = True) -> tuple[Any, dict | None]:
        """(state, data_state) of checkpoint ``step`` (the latest when None).

        ``abstract_state``: the train state's structure as ``jax.ShapeDtypeStruct(shape, dtype, sharding=...)``
        leaves (or arrays, whose shardings are taken) for the current mesh; the arrays are read straight into those
        shardings, whatever mesh wrote them. Shapes and dtypes must match the checkpoint exactly: a mismatch raises
        ``CheckpointMismatchError`` naming every differing parameter; a step whose files cannot be read raises
        ``CorruptCheckpointError`` naming the file. ``data_state`` is None when ``restore_data_state`` is False.
        """
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise FileNotFoundError(f"no checkpoint in {self.directory}")
            step = steps[-1]
        elif step not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; steps there: {steps}")

        abstract_state = jax.tree.map(_as_abstract, abstract_state)
        state_dir = self.directory / str(step) / _STATE
        if not state_dir.is_dir():
            raise CorruptCheckpointError(step, state_dir, "missing (the train state folder of this step is gone)")
        self._check_matches(step, abstract_state)
        args = {_STATE: ocp.args.StandardRestore(abstract_state)}
        if restore_data_state:
            self._check_data_state_file(step)
            args[_DATA_STATE] = ocp.args.JsonRestore()
        with _reading(step, state_dir):
            restored = self._manager.restore(step, args=ocp.args.Composite(**args))
        return restored[_STATE], (dict(restored[_DATA_STATE]) if restore_data_state else None)

    def _check_matches(self, step: int, abstract_state: Any) -> None:
        with _reading(step, self.directory / str(step) / _STATE):
            metadata = self._manager.item_metadata(step)[_STATE]
            if metadata is None:
                raise FileNotFoundError("orbax found no metadata")
        stored = _flat_by_path(getattr(metadata, "tree", metadata))
        wanted = _flat_by_path(abstract_state)
        problems = []
        for path in sorted(wanted.keys() & stored.keys()):
            s, w = stored[path], wanted[path]
            if tuple(s.shape) != tuple(w.shape) or np.dtype(s.dtype) != np.dtype(w.dtype):
                problems.append(f"  {path}: checkpoint {_describe(s)}, model expects {_describe(w)}")
        problems += [f"  {path}: expected by the model, not in the checkpoint"
                     for path in sorted(wanted.keys() - stored.keys())]
        problems += [f"  {path}: in the checkpoint, not in the model" for path in sorted(stored.keys() - wanted.keys())]
        if problems:
            shown = problems[:_MAX_LISTED] + ([f"  ... and {len(problems) - _MAX_LISTED} more"]
                                              if len(problems) > _MAX_LISTED else [])
            raise CheckpointMismatchError(
                f"checkpoint {self.directory / str(step)} does not match the train state "
                f"({len(problems)} parameter(s) differ):\n" + "\n".join(shown))

    def _check_data_state_file(self, step: int) -> None:
        folder = self.directory / str(step) / _DATA_STATE
        if not (folder / self._data_file).exists():
            found = sorted(p.name for p in folder.iterdir() if p.name.endswith(".json")) if folder.exists() else []
            raise FileNotFoundError(
                f"checkpoint {self.directory / str(step)} has no data state for this process ({self._data_file}); "
                f"it holds {found} (saved by a different number of processes?). restore_data_state=False restores "
                f"the model state alone, for a data iterator that starts afresh")
        path = folder / self._data_file
        try:
            json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise CorruptCheckpointError(step, path, _json_reason(path, e)) from e


# -- what is corrupt ---------------------------------------------------------------------------------------------

# A tensorstore status that may pass by itself: the checkpoint is not known to be bad, so it is not called corrupt.
_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "PERMISSION_DENIED", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED",
              "CANCELLED", "ABORTED")
_CODES = ("CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
          "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
          "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")  # absl status codes
_STATUS = re.compile(rf"\b({'|'.join(_CODES)}): (.*)")
_PARAM = re.compile(r'(?:Error reading|Metadata at) "([^"/]+)/')   # the array's key in the OCDBT store
_LOCAL_FILE = re.compile(r'local file "([^"]*[^/"])"')               # a file of the store named by tensorstore


@contextlib.contextmanager
def _reading(step: int, state_dir: epath.Path) -> Iterator[None]:
    """Reading checkpoint ``step``: an error inside is raised as a ``CorruptCheckpointError`` (from it), unless it
    may be transient."""
    try:
        with abandoned_reads_quiet():
            yield
    except (MemoryError, CheckpointMismatchError):
        raise
    except Exception as e:
        corrupt = _as_corrupt(step, state_dir, e)
        if corrupt is e:
            raise
        raise corrupt from e


def _as_corrupt(step: int, state_dir: epath.Path, error: Exception) -> Exception:
    """``error`` (raised while reading checkpoint ``step``) as a ``CorruptCheckpointError`` naming the file at fault;
    ``error`` itself when it may be transient (nothing says the checkpoint is bad)."""
    chain, e = [], error
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    messages = [str(e) for e in chain]
    for message in messages:
        status = _STATUS.search(message)
        if status and status.group(1) in _TRANSIENT:
            return error
    try:
        if not (state_dir / "_METADATA").exists():
            return CorruptCheckpointError(step, state_dir / "_METADATA", "missing")
        for path in [state_dir / "_METADATA", state_dir / "_sharding",  # the store's JSON files: named exactly
                     *(sorted((state_dir / "array_metadatas").iterdir())
                       if (state_dir / "array_metadatas").is_dir() else [])]:
            reason = _bad_json(path)
            if reason:
                return CorruptCheckpointError(step, path, reason)
    except OSError:  # the folder itself cannot be listed: the error below says why
        pass
    for message in messages:  # tensorstore: "<STATUS>: Error reading "<param>/<chunk>" in OCDBT database at ..."
        status = _STATUS.search(message)
        if status:
            text = status.group(2).split(" [tensorstore_spec=")[0]
            param, file = _PARAM.search(text), _LOCAL_FILE.findall(text)
            where = f"reading parameter {param.group(1)}: " if param else ""
            detail = re.split(r'"\s*: ', text)[-1]
            return CorruptCheckpointError(step, file[-1] if file else state_dir,
                                          f"{where}{status.group(1)}: {detail}")
    first = messages[-1].splitlines()[0] if messages[-1] else type(chain[-1]).__name__
    return CorruptCheckpointError(step, state_dir, f"{type(chain[-1]).__name__}: {first[:300]}")


def _bad_json(path: epath.Path) -> str | None:
    """Why ``path`` (a JSON file orbax wrote) is unreadable, or None when it reads (or does not exist)."""
    try:
        if not path.exists():
            return None
        json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return _json_reason(path, e)
    return None


def _json_reason(path: epath.Path, error: Exception) -> str:
    try:
        if path.exists() and path.stat().length == 0:
            return "empty file (expected JSON)"
    except (OSError, AttributeError):
        pass
    return f"not valid JSON ({error})" if isinstance(error, ValueError) else f"unreadable ({error})"


# -- the noise of an abandoned restore ------------------------------------------------------------------------------

_ABANDONED = "Event loop is closed"


@contextlib.contextmanager
def abandoned_reads_quiet() -> Iterator[None]:
    """Inside: the reads an orbax restore leaves in flight when one read fails say nothing.

    When one array of a restore fails, orbax closes its event loop with the other reads still running; each of
    them then reports, through ``sys.unraisablehook``, a ``RuntimeError: Event loop is closed`` (hundreds of
    tracebacks that bury the one real error). This drops exactly those reports, and passes every other one to the
    hook that was installed before. They may arrive after the restore has raised, so a caller that goes on (the
    trainer) keeps this around its whole run; ``train.py`` installs ``quiet_unraisable_hook`` for its process.
    """
    previous = sys.unraisablehook
    sys.unraisablehook = quiet_unraisable_hook(previous)
    try:
        yield
    finally:
        sys.unraisablehook = previous


def quiet_unraisable_hook(previous):
    """``previous`` (a ``sys.unraisablehook``) without the reports of reads an abandoned restore left behind."""
    if getattr(previous, "_drops_abandoned_reads", False):
        return previous

    def hook(unraisable):
        value, obj = unraisable.exc_value, unraisable.object
        if isinstance(value, RuntimeError) and str(value) == _ABANDONED:
            return
        code = getattr(obj, "cr_code", None)  # a read coroutine of the failed restore, collected unfinished
        if code is not None and "orbax" in code.co_filename:
            return
        previous(unraisable)

    hook._drops_abandoned_reads = True
    return hook


def _as_abstract(x: Any) -> jax.ShapeDtypeStruct:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))


def _flat_by_path(tree: Any) -> dict[str, Any]:
    """Leaves keyed by their path, ``opt_state/0/mu/blocks/0/kernel``: a train-state dataclass, namedtuple or dict
    level and the nested dicts/lists of orbax's metadata give the same key."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SequenceKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _describe(x: Any) -> str:
    return f"{tuple(x.shape)} {np.dtype(x.dtype).name}"
