"""Timing helpers shared by the benchmark scripts."""

import statistics
import time


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls (warm up before calling this)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_median_times(fns, repeats: int) -> list[float]:
    """Median wall time of each of ``fns`` over ``repeats`` rounds that call every one in turn, so a change in the
    machine's load during the measurement falls on all of them alike (warm up before calling this)."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, acc in zip(fns, times):
            start = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - start)
    return [statistics.median(acc) for acc in times]


def minor_faults_per_call(fn, calls: int = 3) -> float:
    """Page faults (minor: memory the kernel maps and zeroes on first touch) per call of ``fn``, from getrusage;
    a program that allocates its working memory afresh on every call pays them every call."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls
