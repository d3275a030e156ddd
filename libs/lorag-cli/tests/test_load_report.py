"""The figures and the plot of a load run, from known samples."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from lorag_cli.load import plot, report
from lorag_cli.load.runner import RunResult, Sample

pytestmark = pytest.mark.unit


def _run(latencies_ms: list[float], errors: dict[str, int] | None = None, first_ms: float | None = None) -> RunResult:
    samples = [
        Sample(
            start=i * 0.01, latency=ms / 1000, code="OK", first_message=None if first_ms is None else first_ms / 1000
        )
        for i, ms in enumerate(latencies_ms)
    ]
    for code, count in (errors or {}).items():
        samples += [Sample(start=0.5, latency=0.001, code=code) for _ in range(count)]
    return RunResult(samples=samples, duration=2.0, elapsed=2.0)


def test_percentiles_come_from_successes_within_hdr_precision():
    figures = report.summarize(_run([float(ms) for ms in range(1, 1001)], {"UNAVAILABLE": 3, "DEADLINE_EXCEEDED": 1}))
    assert (figures["requests"], figures["ok"]) == (1004, 1000)
    assert figures["rps"] == 502.0 and figures["ok_rps"] == 500.0
    for key, exact in (("p50_ms", 500), ("p90_ms", 900), ("p99_ms", 990), ("max_ms", 1000), ("mean_ms", 500.5)):
        assert figures[key] == pytest.approx(exact, rel=1e-3)
    assert figures["errors"] == {"DEADLINE_EXCEEDED": 1, "UNAVAILABLE": 3}
    assert "time_to_first_message_p50_ms" not in figures


def test_streams_report_time_to_first_message_and_a_run_without_successes_has_no_percentiles():
    streamed = report.summarize(_run([40.0, 60.0], first_ms=12.0))
    assert streamed["time_to_first_message_p50_ms"] == pytest.approx(12.0, rel=1e-3)
    failed = report.summarize(_run([], {"INVALID_ARGUMENT": 5}))
    assert (failed["requests"], failed["ok"], failed["p50_ms"], failed["max_ms"]) == (5, 0, None, None)
    json.dumps(failed)  # Everything in the report is JSON.


def test_per_second_rows_bucket_by_completion_time():
    samples = [Sample(0.1, 0.2, "OK"), Sample(0.5, 0.4, "OK"), Sample(0.9, 0.3, "UNAVAILABLE"), Sample(1.5, 0.1, "OK")]
    rows = report.per_second(samples, elapsed=2.0)
    assert [(r["second"], r["completed"], r["errors"]) for r in rows] == [(0, 2, 0), (1, 2, 1)]
    assert (rows[0]["p50_ms"], rows[0]["p99_ms"]) == (pytest.approx(200), pytest.approx(400))
    assert rows[1]["p50_ms"] == pytest.approx(100)


def test_the_html_plot_is_self_contained_with_well_formed_svg_charts():
    figures = {"service": "embedding", "rpc": "Embed", "p99_ms": 12.5, "errors": {}}
    rows = report.per_second([Sample(i * 0.1, 0.01 + i * 0.001, "OK") for i in range(30)], elapsed=3.0)
    page = plot.render_html(figures, rows)
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 2
    charts = [ET.fromstring(svg) for svg in svgs]
    lines = {p.get("class") for p in charts[0].iter("{http://www.w3.org/2000/svg}polyline")}
    assert lines == {"p50_ms", "p99_ms"}
    assert len([r for r in charts[1].iter("{http://www.w3.org/2000/svg}rect") if r.get("class") == "completed"]) == 3
    assert "http" not in re.sub(r'xmlns="http://www.w3.org/2000/svg"', "", page)  # Nothing fetched from elsewhere.
    assert "lorag load embedding Embed" in page


def test_png_plot_when_matplotlib_is_installed(tmp_path):
    if not plot.matplotlib_available():
        pytest.skip("matplotlib is not installed; lorag load writes HTML plots only")
    rows = report.per_second([Sample(i * 0.1, 0.01, "OK") for i in range(20)], elapsed=2.0)
    path = plot.write_png(tmp_path / "run.png", {"service": "indexer", "rpc": "Search"}, rows)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
