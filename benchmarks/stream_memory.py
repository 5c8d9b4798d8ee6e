"""Peak memory and wall time of `sample.py --stream` for 5, 15, 30 and 60 s of video at 16 fps.

    python benchmarks/stream_memory.py [--size 64] [--model FOLDER]

Each length runs in a fresh process (peak RSS = that process's ru_maxrss, which includes the ~0.6 GB of
python + jax + torch imports). Without --model a tiny random pipeline (sana_jax.testing.pipelines) is built.
Memory should stay flat as the video grows (the state carried between blocks has a fixed size and each chunk
is appended to the mp4 and dropped); time should grow linearly.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

SECONDS = (5, 15, 30, 60)


def one_case(model: str, frames: int, size: int) -> None:
    from sana_jax.pipeline.sample import sample_to_file

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        sample_to_file(model, "a red circle moving left", os.path.join(tmp, "v.mp4"), stream=True, frames=frames,
                       height=size, width=size, block_frames=10, sampler="few_step", log=lambda *a: None)
        wall = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": frames, "rss_mb": rss_mb, "wall_s": wall}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--case", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        return one_case(args.model, args.case, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = os.path.join(tmp, "tiny")
            subprocess.run([sys.executable, "-m", "sana_jax.testing.pipelines", model], check=True,
                           capture_output=True)
        rows = []
        for seconds in SECONDS:
            frames = 16 * seconds + 1
            proc = subprocess.run([sys.executable, __file__, "--model", model, "--size", str(args.size), "--case",
                                   str(frames)], capture_output=True, text=True, check=True)
            rows.append((seconds, json.loads(proc.stdout.strip().splitlines()[-1])))
    base = rows[1][1]["rss_mb"]
    print(f"sample.py --stream, {args.size}x{args.size}, blocks of 10 latent frames, few-step sampler")
    print("| video | frames | peak RSS MB | vs 15 s | wall s | s per second of video |")
    print("|---|---|---|---|---|---|")
    for seconds, r in rows:
        print(f"| {seconds} s | {r['frames']} | {r['rss_mb']:.0f} | {r['rss_mb'] / base:.2f}x | {r['wall_s']:.1f} | "
              f"{r['wall_s'] / seconds:.2f} |")


if __name__ == "__main__":
    main()
