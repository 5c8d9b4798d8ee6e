"""The marker a loader returns instead of an example it cannot read.

Loaders may run in grain worker processes; they never raise for a bad file, they return ``Unreadable`` and the
iterator in the main process counts, logs and skips it, so the count is exact whatever the number of workers.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Unreadable:
    what: str      # the file or record, e.g. "clips/a.mp4 (manifest line 3)"
    reason: str    # why, e.g. "InvalidDataError: Invalid data found when processing input"


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
