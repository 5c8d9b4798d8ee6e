"""The host-memory setting the command-line entry points (train.py, sample.py) run under.

XLA:CPU allocates a program's working memory with malloc on every call and frees it after; glibc serves blocks that
large with fresh mmaps, so every call faults its whole working set in again, 4 kB at a time (the small DiT's training
step: ~60,000 faults, 245 MB, per step). With glibc's tunable ``glibc.malloc.hugetlb=1`` malloc asks the kernel for
transparent huge pages (2 MB) on those maps: 512x fewer faults and fewer TLB misses. Measured on the 2-core CPU
(benchmarks/train_step.py, both sides in one process): the small DiT's step 0.702 -> 0.483 s scanned, 0.654 -> 0.389
s unrolled; torch's 0.601 -> 0.453 s. (mallopt from inside the process cannot ask for huge pages, and the settings it
can reach, no mmap and one arena, gave less: 0.563 / 0.463 s, torch 0.516 s.)

A glibc tunable is read only when a program starts, so ``reexec_with_tuned_malloc`` starts the interpreter again,
with the same arguments, before anything is imported. A GLIBC_TUNABLES that already names ``glibc.malloc.hugetlb``
is left as it is: ``GLIBC_TUNABLES=glibc.malloc.hugetlb=0`` keeps glibc's default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

MALLOC_TUNABLE = "glibc.malloc.hugetlb=1"
MIN_GLIBC = (2, 35)  # the first glibc with glibc.malloc.hugetlb


def _glibc_version() -> tuple[int, ...] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):  # not glibc (macOS, musl) or no confstr
        return None
    return tuple(int(p) for p in version.split(".")[:2]) if name == "glibc" else None


def tuned_environ(environ: Mapping[str, str], glibc: tuple[int, ...] | None = None) -> dict | None:
    """``environ`` with MALLOC_TUNABLE added to GLIBC_TUNABLES (kept tunables first), or None when nothing changes:
    not glibc >= 2.35 (``glibc``: the version, read from the running libc when None), or GLIBC_TUNABLES already names
    ``glibc.malloc.hugetlb``."""
    glibc = _glibc_version() if glibc is None else glibc
    current = environ.get("GLIBC_TUNABLES", "")
    if glibc is None or glibc < MIN_GLIBC or "glibc.malloc.hugetlb=" in current:
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(t for t in (current, MALLOC_TUNABLE) if t)}


def reexec_with_tuned_malloc() -> None:
    """Replace this process by the same command under ``tuned_environ`` (same interpreter, options and arguments);
    returns without doing anything where ``tuned_environ`` changes nothing. Call it first in a ``__main__`` block."""
    env = tuned_environ(os.environ)
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
