"""File IO with the project's two rules: errors name the file, and nothing half-written is ever left behind."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import struct
import sys
import tempfile
from typing import Callable, Iterator, Mapping

import ml_dtypes
import numpy as np

# safetensors dtype tags <-> numpy dtypes (bf16 through ml_dtypes, so no framework is needed to read a file).
_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),   # fp8-quantized weights (sana_jax.quantize)
}
_TAGS = {v: k for k, v in _DTYPES.items()}


class WeightFileError(ValueError):
    """A weight file that is missing, truncated or malformed."""


class UnsafePathError(ValueError):
    """A path named by a file (an index, a config, model_index.json) that leads outside its own folder."""


def plain_name(name, *, where: str, what: str) -> str:
    """``name`` if it is one plain path component (no separator, not ``.``/``..``, not empty), else an error."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UnsafePathError(f"{where}: {what} {name!r} is not a plain name (one path component expected)")
    return name


def inside(folder: str | os.PathLike, relative, *, where: str, what: str, resolve: bool = False) -> str:
    """``folder/relative`` after checking that it stays inside ``folder``.

    ``relative`` comes from a file (an index's ``weight_map``, model_index.json): an absolute path or one whose
    ``..`` leads out of ``folder`` is an error naming ``where`` and the entry, raised before anything is opened.
    ``resolve=True`` also follows symlinks (for folders this project writes into or walks). Without it a symlinked
    *file* inside the folder is the folder owner's choice and is followed: the Hugging Face cache lays every
    snapshot file out as a symlink to ``../../blobs/<hash>``.
    """
    if not isinstance(relative, str) or not relative or os.path.isabs(relative) or "\0" in relative:
        raise UnsafePathError(f"{where}: {what} {relative!r} is not a relative path inside {folder}")
    if os.path.normpath(relative).split(os.sep)[0] == os.pardir:
        raise UnsafePathError(f"{where}: {what} {relative!r} leads outside its folder {folder}")
    path = os.path.join(os.fspath(folder), relative)
    if resolve:
        root = os.path.realpath(folder)
        if os.path.commonpath([os.path.realpath(path), root]) != root:
            raise UnsafePathError(f"{where}: {what} {relative!r} resolves (through a symlink) outside its folder "
                                  f"{folder}")
    return path


def check_output_folder(dst: str | os.PathLike, *, sources, marker: str, overwrite: bool, what: str) -> None:
    """Raises (before any work) when replacing the folder ``dst`` whole could destroy what this project did not
    write: ``dst`` may be absent, empty, or an earlier output (it holds ``marker``); any other folder only with
    ``overwrite``; never a folder that is one of ``sources`` (inputs, files or folders), holds one or lies inside
    one, and never a symlink or a file."""
    dst = os.fspath(dst)
    d = os.path.realpath(dst)
    for src in map(os.fspath, sources):
        s = os.path.realpath(src)
        if s == d:
            raise ValueError(f"DST {dst} is SRC {src}: the {what} would replace its own input; write elsewhere")
        if os.path.commonpath([s, d]) == d:
            raise ValueError(f"DST {dst} contains SRC {src}: replacing it would delete the input; write elsewhere")
        if os.path.commonpath([s, d]) == s:
            raise ValueError(f"DST {dst} lies inside SRC {src}: write the {what} outside its input")
    if os.path.islink(dst):
        raise ValueError(f"DST {dst} is a symlink; give the folder itself")
    if not os.path.lexists(dst):
        return
    if not os.path.isdir(dst):
        raise ValueError(f"DST {dst} exists and is not a folder; remove it or write elsewhere")
    if os.listdir(dst) and not os.path.isfile(os.path.join(dst, marker)) and not overwrite:
        raise ValueError(f"DST {dst} is a non-empty folder that no {what} wrote; pass --overwrite to replace it "
                         f"whole (everything in it is deleted), or write elsewhere")


def _umask() -> int:
    """The process umask, read without changing it (Linux), else by the set-and-restore idiom."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# -- termination --------------------------------------------------------------------------------------------------
# A CLI runs its work inside ``terminate_cleanly()``: SIGTERM (and SIGHUP) then unwind the stack like Ctrl-C does, so
# every ``atomic_*`` block below removes its temporary and every ``with`` closes its child process (ffmpeg) before
# the process exits. The few steps that must not be cut in half (swapping a folder into place, removing a
# temporary) run with signals deferred to their end. Python prints and drops an exception raised where nothing can
# receive it (a gc callback, which JAX runs at every collection, ``__del__``, an at-fork hook), so a timer checks
# that the exception is still unwinding the stack and raises it again where it was dropped.

class Terminated(BaseException):
    """SIGTERM/SIGHUP received inside ``terminate_cleanly()``; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


_RETRY_SECONDS = 0.05
_deferring = 0
_pending: list[int] = []
_delivering: tuple[int, BaseException] | None = None  # the signal being raised and its exception


def _deliver(signum: int):
    global _delivering
    exc = KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)
    _delivering = (signum, exc)
    signal.setitimer(signal.ITIMER_REAL, _RETRY_SECONDS, _RETRY_SECONDS)
    raise exc


def _unwinding(exc: BaseException) -> bool:
    """True while ``exc`` (or an exception raised while handling it) is the one being handled or propagated."""
    seen = sys.exc_info()[1]
    while seen is not None:
        if seen is exc:
            return True
        seen = seen.__context__
    return False


def _on_signal(signum, frame):
    if _deferring:
        _pending.append(signum)
        return
    _deliver(signum)


def _on_retry(signum, frame):
    if _delivering is not None and not _deferring and not _unwinding(_delivering[1]):
        _deliver(_delivering[0])  # it was dropped: raise it again here


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """A signal arriving inside this block (handled by ``terminate_cleanly``) is raised at its end."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending:
            signum = _pending[0]
            _pending.clear()
            _deliver(signum)


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise (``KeyboardInterrupt`` / ``Terminated``) in the main thread while inside;
    SIGALRM is taken for the timer that re-raises a dropped one."""
    global _delivering
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    previous = {s: signal.signal(s, _on_signal) for s in (getattr(signal, n) for n in names if hasattr(signal, n))}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, _on_retry)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _pending.clear()
        _delivering = None
        for s, handler in previous.items():
            signal.signal(s, handler)


# -- atomic writes ------------------------------------------------------------------------------------------------

def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yields a temporary file name beside ``path``; on success it replaces ``path`` in one rename, with the
    permissions the umask gives a new file. On any error or signal the temporary is removed."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with signals_deferred(), contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary directory beside ``path``; on success it replaces ``path`` in one rename (a folder already
    there is swapped out, then removed), with the permissions the umask gives a new folder."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        yield tmp
        if os.path.isdir(path):
            with signals_deferred():  # never leave ``path`` missing between the two renames
                old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
                os.rename(path, os.path.join(old, "x"))
                os.rename(tmp, path)
                shutil.rmtree(old)
        else:
            os.rename(tmp, path)
    except BaseException:
        with signals_deferred():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


class LazyArray:
    """A tensor read when asked for (``np.asarray``), for loaders that hold one tensor's host copy at a time:
    ``shape`` and ``dtype`` known up front, ``read()`` returns a new array."""

    __slots__ = ("shape", "dtype", "_read")

    def __init__(self, shape: tuple[int, ...], dtype, read: Callable[[], np.ndarray]):
        self.shape, self.dtype, self._read = tuple(shape), np.dtype(dtype), read

    def read(self) -> np.ndarray:
        return self._read()

    def __array__(self, dtype=None, copy=None):
        value = self._read()
        return value if dtype is None else value.astype(dtype, copy=False)


def empty_aligned(shape: tuple[int, ...], dtype, alignment: int = 64) -> np.ndarray:
    """``np.empty`` whose data starts on an ``alignment``-byte boundary: XLA:CPU's ``jax.device_put`` then uses the
    array's memory as the device buffer instead of copying it (it copies a less aligned array)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    start = (-raw.ctypes.data) % alignment
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _read_range(path: str, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """One tensor's bytes read (not mapped) into a new aligned array: only that array is resident afterwards."""
    out = empty_aligned(shape, dtype)
    flat = out.reshape(-1).view(np.uint8)
    with open(path, "rb") as f:
        f.seek(offset)
        got = f.readinto(flat) if flat.size else 0
    if got != flat.size:
        raise WeightFileError(f"{path}: truncated while reading ({got} of {flat.size} bytes at offset {offset})")
    return out


def read_safetensors(path: str | os.PathLike, *, lazy: bool = False) -> dict[str, np.ndarray]:
    """Reads a .safetensors file into numpy arrays (memory-mapped), checking its header against its size.
    ``lazy=True``: `LazyArray`s instead, each read from the file (not mapped) when asked for, so that a loader
    converting them one by one never holds more than one tensor's host copy beside what it keeps.

    The header is checked whole before any tensor is mapped: a JSON object whose ``__metadata__`` (optional) maps
    strings to strings and whose every other entry holds a known ``dtype``, a ``shape`` of non-negative ints and
    ``data_offsets`` ``[start, stop]`` with ``0 <= start <= stop <= data size`` and exactly the shape's bytes
    between them. Any violation is a WeightFileError naming the file and the tensor.
    """
    max_header = 100_000_000  # the format's own limit (safetensors MAX_HEADER_SIZE): refused before it is read
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise WeightFileError(f"{path}: weight file not found") from None
    if not os.path.isfile(path):  # a directory, FIFO (whose open blocks) or device
        raise WeightFileError(f"{path}: not a regular file")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightFileError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise WeightFileError(f"{path}: truncated safetensors file (header of {n} bytes, file of {size})")
        if n > max_header:
            raise WeightFileError(f"{path}: safetensors header of {n} bytes is over the format's limit of "
                                  f"{max_header}")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise WeightFileError(f"{path}: malformed safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise WeightFileError(f"{path}: malformed safetensors header (a JSON {type(header).__name__}, expected an "
                              f"object of tensors)")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict):
        raise WeightFileError(f"{path}: '__metadata__' is a JSON {type(metadata).__name__}, expected an object of "
                              f"strings")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise WeightFileError(f"{path}: '__metadata__' entry {key!r} is {value!r}, expected a string")

    def integer(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    data_size = size - 8 - n
    tensors = []
    for key, info in header.items():
        where = f"{path}: tensor {key!r}"
        if not isinstance(info, dict):
            raise WeightFileError(f"{where} is a JSON {type(info).__name__}, expected an object with dtype, shape "
                                  f"and data_offsets")
        missing = [field for field in ("dtype", "shape", "data_offsets") if field not in info]
        if missing:
            raise WeightFileError(f"{where} has no {', '.join(missing)}")
        tag, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(tag, str) or tag not in _DTYPES:
            raise WeightFileError(f"{where} has unsupported dtype {tag!r}; expected one of {sorted(_DTYPES)}")
        if not isinstance(shape, list) or not all(integer(d) and d >= 0 for d in shape):
            raise WeightFileError(f"{where} has shape {shape!r}; expected a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(integer(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise WeightFileError(f"{where} has data_offsets {offsets!r}; expected [start, stop], integers with "
                                  f"0 <= start <= stop")
        dtype, (start, stop) = _DTYPES[tag], offsets
        count = int(np.prod(shape, dtype=object))  # Python ints: a forged shape cannot overflow into a match
        if stop - start != count * dtype.itemsize:
            raise WeightFileError(f"{where} has {stop - start} bytes for shape {tuple(shape)} {dtype}; expected "
                                  f"{count * dtype.itemsize}")
        if stop > data_size:
            raise WeightFileError(f"{path}: truncated safetensors file (tensor {key!r} needs {stop} bytes of data, "
                                  f"the file holds {data_size})")
        tensors.append((key, dtype, tuple(shape), start, count))
    if lazy:
        return {key: LazyArray(shape, dtype, functools.partial(_read_range, path, 8 + n + start, shape, dtype))
                for key, dtype, shape, start, count in tensors}
    buf = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n, shape=(data_size,)) if data_size else b""
    return {key: np.frombuffer(buf, dtype=dtype, count=count, offset=start).reshape(shape)
            for key, dtype, shape, start, count in tensors}


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Writes a .safetensors file atomically (keys sorted, 8-byte aligned header, as the reference writer)."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    arrays = []
    for key in sorted(tensors):
        a = np.ascontiguousarray(tensors[key])
        if a.dtype not in _TAGS:
            raise WeightFileError(f"{path}: tensor {key!r} has unsupported dtype {a.dtype}")
        header[key] = {"dtype": _TAGS[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for a in arrays:
                f.write(a.tobytes())
