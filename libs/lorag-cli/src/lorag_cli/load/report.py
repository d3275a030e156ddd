"""The figures of a load run: HDR-histogram latency percentiles, throughput and errors by gRPC code.

The keys ``requests``, ``rps``, ``p50_ms``, ``p90_ms``, ``p99_ms``, ``max_ms`` and ``errors`` are read by users'
scripts: never rename them. Latency percentiles are over the calls that succeeded (a fast refusal would otherwise
flatter them); failed calls are counted in ``errors`` by code name. Values are recorded in microseconds in an
HdrHistogram with 3 significant digits, so every percentile is within 0.1 % of the exact value.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from lorag_cli.load.runner import RunResult, Sample

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # One hour.
SIGNIFICANT_DIGITS = 3


def histogram(seconds: Iterable[float]) -> Any:
    """An HdrHistogram of the given durations, in microseconds."""
    from hdrh.histogram import HdrHistogram

    hist = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    for value in seconds:
        hist.record_value(min(max(round(value * 1e6), LOWEST_US), HIGHEST_US))
    return hist


def _ms(hist: Any, percentile: float) -> float | None:
    if hist.get_total_count() == 0:
        return None
    return round(hist.get_value_at_percentile(percentile) / 1000, 3)


def summarize(result: RunResult) -> dict[str, Any]:
    """requests, ok, rps, latency percentiles (ms) and errors by code of a run."""
    samples: list[Sample] = result.samples
    ok = [s for s in samples if s.code == "OK"]
    hist = histogram(s.latency for s in ok)
    errors = dict(sorted(Counter(s.code for s in samples if s.code != "OK").items()))
    figures: dict[str, Any] = {
        "duration_s": result.duration,
        "elapsed_s": round(result.elapsed, 3),
        "requests": len(samples),
        "ok": len(ok),
        "rps": round(len(samples) / result.elapsed, 2) if result.elapsed > 0 else 0.0,
        "ok_rps": round(len(ok) / result.elapsed, 2) if result.elapsed > 0 else 0.0,
        "p50_ms": _ms(hist, 50),
        "p90_ms": _ms(hist, 90),
        "p99_ms": _ms(hist, 99),
        "max_ms": round(hist.get_max_value() / 1000, 3) if ok else None,
        "mean_ms": round(hist.get_mean_value() / 1000, 3) if ok else None,
        "errors": errors,
    }
    firsts = [s.first_message for s in ok if s.first_message is not None]
    if firsts:
        first_hist = histogram(firsts)
        figures["time_to_first_message_p50_ms"] = _ms(first_hist, 50)
        figures["time_to_first_message_p99_ms"] = _ms(first_hist, 99)
    return figures


def per_second(samples: list[Sample], elapsed: float) -> list[dict[str, Any]]:
    """One row per second of the window, by completion time: completions, errors, p50 and p99 (ms) of successes."""
    seconds = max(1, int(elapsed + 0.999999))
    buckets: list[list[Sample]] = [[] for _ in range(seconds)]
    for sample in samples:
        buckets[min(max(int(sample.end), 0), seconds - 1)].append(sample)
    rows = []
    for second, bucket in enumerate(buckets):
        latencies = sorted(s.latency * 1000 for s in bucket if s.code == "OK")
        rows.append(
            {
                "second": second,
                "completed": len(bucket),
                "errors": sum(s.code != "OK" for s in bucket),
                "p50_ms": _exact(latencies, 0.50),
                "p99_ms": _exact(latencies, 0.99),
            }
        )
    return rows


def _exact(ordered: list[float], quantile: float) -> float | None:
    """The nearest-rank quantile of a sorted list (exact; one second holds few enough values)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(round(quantile * len(ordered), 9)))
    return round(ordered[min(rank, len(ordered)) - 1], 3)
