"""What every command line shares: argument types that reject bad numbers at parse time, and one way to run the
work — bad input is one ``error:`` line and exit 2 (no traceback), a signal removes the temporaries and exits
128 + its number."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, Mapping

from sana_jax import _io


def float_arg(low: float, *, above: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number >= ``low`` (> ``low`` with ``above``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"expected a finite number {'>' if above else '>='} {low:g}, "
                                             f"got {text!r}")
        return value

    return parse


def int_arg(low: int, high: int | None = None, *, high_text: str | None = None) -> Callable[[str], int]:
    """argparse type: an integer in [low, high) (``high_text`` writes ``high`` in the message)."""
    span = f">= {low}" if high is None else f"in [{low}, {high_text or high})"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value >= high):
            raise argparse.ArgumentTypeError(f"expected an integer {span}, got {text!r}")
        return value

    return parse


positive_int_arg = int_arg(1)
seed_arg = int_arg(0, 2**32, high_text="2**32")  # jax.random.key keeps 32 bits: larger seeds would alias smaller


def add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quantize MODE`` and ``--quantize-components NAME...`` as `SanaVideoPipeline.from_pretrained` takes them."""
    from sana_jax.quantize import MODES, PIPELINE_COMPONENTS

    parser.add_argument("--quantize", default=None, choices=MODES,
                        help="compute the text encoder's and the DiT's linear layers quantized (sana_jax.quantize)")
    parser.add_argument("--quantize-components", nargs="+", default=list(PIPELINE_COMPONENTS),
                        choices=PIPELINE_COMPONENTS, help="with --quantize: which components (default both)")


def run(work: Callable[[], int | None], *, interrupted: str, exit_codes: Mapping[type, int] | None = None) -> int:
    """Runs ``work`` with signals unwinding the stack (``_io.terminate_cleanly``); returns the exit status.

    OSError / ValueError (bad input: a path, a value, a file) -> ``error: ...`` and 2; a type in ``exit_codes`` ->
    ``error: ...`` and its code; Ctrl-C -> 130, SIGTERM -> 143, SIGHUP -> 129, each printing ``interrupted`` (what
    was left as it was)."""
    try:
        with _io.terminate_cleanly():
            return work() or 0
    except KeyboardInterrupt:
        print(f"interrupted; {interrupted}", file=sys.stderr)
        return 130
    except _io.Terminated as e:
        print(f"{e}; {interrupted}", file=sys.stderr)
        return e.exit_code
    except Exception as e:
        codes = {**(exit_codes or {}), OSError: 2, ValueError: 2}
        code = next((c for kind, c in codes.items() if isinstance(e, kind)), None)
        if code is None:
            raise
        print(f"error: {e}", file=sys.stderr)
        return code
