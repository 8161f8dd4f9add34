"""Timing helpers shared by the benchmarks: percentiles and ratio lines against a floor."""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / p) for p in ("operator", "tests", ".")]


def sample(operation: Callable[[], object], *, runs: int, warmup: int = 20) -> list[float]:
    """Seconds per call, one sample per call, after a warm-up."""
    for _ in range(warmup):
        operation()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        operation()
        samples.append(time.perf_counter() - start)
    return samples


def sample_interleaved(operations: dict[str, Callable[[], object]], *, runs: int,
                       warmup: int = 20) -> dict[str, list[float]]:
    """Like ``sample`` for several operations, taking turns in an order shuffled each round, so
    drift on a noisy machine, and what the operation before left in the caches, hit each of
    them alike. (In a fixed order, whichever ran right after the floor came out 0.1-0.2x the
    floor slower than when it ran after a sibling.)"""
    for operation in operations.values():
        for _ in range(warmup):
            operation()
    samples: dict[str, list[float]] = {label: [] for label in operations}
    order = list(operations.items())
    shuffler = random.Random(0)  # the same orders on every run
    for _ in range(runs):
        shuffler.shuffle(order)
        for label, operation in order:
            start = time.perf_counter()
            operation()
            samples[label].append(time.perf_counter() - start)
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def report(label: str, samples: list[float], floor: list[float] | None = None,
           target: float | None = None) -> float:
    """Print p50/p99 (and the p50 ratio to the floor, with the target); return that ratio."""
    p50, p99 = statistics.median(samples), percentile(samples, 99)
    line = f"{label:<44} p50 {p50 * 1e6:9.1f} µs  p99 {p99 * 1e6:9.1f} µs"
    ratio = 0.0
    if floor:
        ratio = p50 / statistics.median(floor)
        line += f"  ratio {ratio:5.2f}x floor"
        if target is not None:
            line += f" (target ≤ {target}x: {'ok' if ratio <= target else 'MISSED'})"
    print(line)
    return ratio
