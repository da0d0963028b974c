"""
Turning results into figures: the summary table, the JSON file and the chart.

A *figure* is one number per server (and per subscriber count where it
applies), shown with its ratio to Nucleus Stream and the load generator's
share of its core during that measurement.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["FIGURES", "Figure", "figure_table", "render_chart", "render_table", "write_json"]

REFERENCE = "nucleus"

Entry = dict[str, Any]


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    better: Literal["higher", "lower"]
    per_n: bool
    value: Callable[[Entry], float | None]
    """Read the figure from one measurement's result (``fanout``, ``idle``...)."""
    source: str
    """Which measurement the figure comes from."""
    fmt: Callable[[float], str]
    shown_with: str | None = None
    """Shown only when this figure has a value for some server (redis-server CPU)."""


def _get(*path: str) -> Callable[[Entry], float | None]:
    def read(result: Entry) -> float | None:
        node: Any = result
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return float(node) if isinstance(node, int | float) else None

    return read


def _si(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


FIGURES: tuple[Figure, ...] = (
    Figure(
        "deliveries_per_s",
        "fan-out deliveries/s at saturation",
        "higher",
        True,
        _get("deliveries_per_s"),
        "fanout",
        _si,
    ),
    Figure(
        "latency_p50_ms",
        "latency p50 ms (20 msg/s)",
        "lower",
        True,
        _get("latency_ms", "p50"),
        "latency",
        _ms,
    ),
    Figure(
        "latency_p90_ms", "latency p90 ms", "lower", True, _get("latency_ms", "p90"), "latency", _ms
    ),
    Figure(
        "latency_p99_ms", "latency p99 ms", "lower", True, _get("latency_ms", "p99"), "latency", _ms
    ),
    Figure(
        "latency_max_ms", "latency max ms", "lower", True, _get("latency_ms", "max"), "latency", _ms
    ),
    Figure(
        "cpu_s_per_million",
        "server CPU s per million deliveries",
        "lower",
        True,
        _get("server_cpu_s_per_million"),
        "fanout",
        lambda v: f"{v:.2f}",
    ),
    Figure(
        "broker_cpu_s_per_million",
        "redis-server CPU s per million deliveries",
        "lower",
        True,
        _get("broker_cpu_s_per_million"),
        "fanout",
        lambda v: f"{v:.2f}",
    ),
    Figure(
        "total_cpu_s_per_million",
        "server + redis-server CPU s per million deliveries",
        "lower",
        True,
        _get("total_cpu_s_per_million"),
        "fanout",
        lambda v: f"{v:.2f}",
        shown_with="broker_cpu_s_per_million",
    ),
    Figure(
        "serial_deliveries_per_s",
        "deliveries/s, one message in flight (serial: no batching)",
        "higher",
        True,
        _get("deliveries_per_s"),
        "serial",
        _si,
    ),
    Figure(
        "serial_cpu_s_per_million",
        "serial: server CPU s per million deliveries",
        "lower",
        True,
        _get("server_cpu_s_per_million"),
        "serial",
        lambda v: f"{v:.2f}",
    ),
    Figure(
        "serial_broker_cpu_s_per_million",
        "serial: redis-server CPU s per million deliveries",
        "lower",
        True,
        _get("broker_cpu_s_per_million"),
        "serial",
        lambda v: f"{v:.2f}",
    ),
    Figure(
        "serial_total_cpu_s_per_million",
        "serial: server + redis-server CPU s per million deliveries",
        "lower",
        True,
        _get("total_cpu_s_per_million"),
        "serial",
        lambda v: f"{v:.2f}",
        shown_with="serial_broker_cpu_s_per_million",
    ),
    Figure(
        "serial_latency_p50_ms",
        "serial: latency p50 ms",
        "lower",
        True,
        _get("latency_ms", "p50"),
        "serial",
        _ms,
    ),
    Figure(
        "serial_latency_p90_ms",
        "serial: latency p90 ms",
        "lower",
        True,
        _get("latency_ms", "p90"),
        "serial",
        _ms,
    ),
    Figure(
        "serial_latency_p99_ms",
        "serial: latency p99 ms",
        "lower",
        True,
        _get("latency_ms", "p99"),
        "serial",
        _ms,
    ),
    Figure(
        "serial_latency_max_ms",
        "serial: latency max ms",
        "lower",
        True,
        _get("latency_ms", "max"),
        "serial",
        _ms,
    ),
    Figure(
        "kib_per_idle_conn",
        "server RSS KiB per idle connection",
        "lower",
        True,
        _get("kib_per_conn"),
        "idle",
        lambda v: f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}",
    ),
    Figure(
        "handshakes_per_s",
        "handshakes/s (open, upgrade, close)",
        "higher",
        False,
        _get("handshakes_per_s"),
        "handshakes",
        _si,
    ),
    Figure(
        "open_handshakes_per_s",
        "handshakes/s (open and upgrade, no close; 64 in flight)",
        "higher",
        False,
        _get("handshakes_per_s"),
        "opens",
        _si,
    ),
    Figure(
        "open_cpu_us_per_handshake",
        "server CPU us per handshake (open and upgrade, no close)",
        "lower",
        False,
        _get("server_cpu_us_per_handshake"),
        "opens",
        lambda v: f"{v:.0f}",
    ),
)


def _measurement(entry: Entry, figure: Figure, n: str | None) -> Entry | None:
    if not entry.get("available"):
        return None
    found = (
        entry.get(figure.source)
        if n is None
        else entry.get("subscribers", {}).get(n, {}).get(figure.source)
    )
    return found if isinstance(found, dict) and "error" not in found else None


def figure_table(servers: dict[str, Entry], subscribers: list[str]) -> dict[str, Any]:
    """Every figure as ``{figure: {server: {column: cell}}}``, for the JSON file and the table.

    A cell holds ``value``, ``ratio`` (to Nucleus Stream), ``loadgen_share`` and ``flags``.
    """
    table: dict[str, Any] = {}
    for figure in FIGURES:
        columns = subscribers if figure.per_n else ["all"]
        rows: dict[str, Any] = {}
        for name, entry in servers.items():
            cells: dict[str, Any] = {}
            for column in columns:
                result = _measurement(entry, figure, column if figure.per_n else None)
                if result is None:
                    continue
                value = figure.value(result)
                if value is None and not result.get("overloaded"):
                    continue
                cells[column] = {
                    "value": value,
                    "loadgen_share": result.get(
                        "loadgen_core_share", result.get("loadgen_cpu_share")
                    ),
                    "flags": _flags(result),
                }
            rows[name] = cells
        reference = rows.get(REFERENCE, {})
        for cells in rows.values():
            for column, cell in cells.items():
                base = reference.get(column, {}).get("value")
                value = cell["value"]
                cell["ratio"] = value / base if base and value is not None else None
        table[figure.key] = rows
    return table


def _flags(result: Entry) -> list[str]:
    flags = []
    if result.get("overloaded"):
        flags.append("overloaded")
    if result.get("check", {}).get("missing"):
        flags.append("incomplete")
    if (result.get("loadgen_core_share") or 0) > 0.9:
        flags.append("loadgen-bound")
    if result.get("server_unsaturated"):
        flags.append("unsaturated")
    if result.get("broker_other_clients") or any(
        v > 0.15 for v in (result.get("other_load") or {}).values()
    ):
        flags.append("interference")
    return flags


_FLAG_MARKS = {
    "overloaded": "!",
    "incomplete": "?",
    "loadgen-bound": "L",
    "unsaturated": "u",
    "interference": "~",
}


def render_table(servers: dict[str, Entry], subscribers: list[str], table: dict[str, Any]) -> str:
    """The end-of-run summary: per figure, one row per server, one column per subscriber count."""
    names = [name for name, entry in servers.items() if entry.get("available")]
    width = max([len(name) for name in names] + [12])
    lines = []
    for figure in FIGURES:
        if not any(table[figure.shown_with or figure.key].values()):
            continue
        columns = subscribers if figure.per_n else ["all"]
        heads = [f"N={int(c):,}" if c != "all" else "" for c in columns]
        lines.append("")
        lines.append(f"{figure.title} ({figure.better} is better)")
        lines.append(" " * (width + 2) + "".join(f"{h:>28}" for h in heads))
        for name in names:
            cells = table[figure.key].get(name, {})
            row = f"  {name:<{width}}"
            for column in columns:
                row += f"{_cell(figure, cells.get(column), name == REFERENCE):>28}"
            lines.append(row)
    unavailable = {name: e for name, e in servers.items() if not e.get("available")}
    if unavailable:
        lines.append("")
        lines.append("not available:")
        for name, entry in unavailable.items():
            lines.append(f"  {name:<{width}} {str(entry.get('error', '?')).splitlines()[0]}")
    lines.append("")
    lines.append("ratio = value / Nucleus Stream's; lg = load generator's share of its core;")
    lines.append(
        "! overloaded at the fixed rate  ? deliveries missing  L loadgen-bound"
        "  u server core not saturated  ~ other load on the cores"
    )
    return "\n".join(lines)


def _cell(figure: Figure, cell: dict[str, Any] | None, reference: bool) -> str:
    if cell is None:
        return "-"
    if cell["value"] is None:
        return "overloaded !"
    text = figure.fmt(cell["value"])
    if not reference and cell.get("ratio") is not None:
        text += f" x{cell['ratio']:.2f}"
    share = cell.get("loadgen_share")
    if share is not None and figure.source != "idle":
        text += f" lg{share:4.0%}"
    marks = "".join(_FLAG_MARKS[f] for f in cell.get("flags", []))
    return text + (f" {marks}" if marks else "")


def write_json(document: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def render_chart(
    servers: dict[str, Entry], subscribers: list[str], table: dict[str, Any], path: Path
) -> None:
    """Grouped bars, one panel per figure measured; needs matplotlib (Agg backend, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, entry in servers.items() if entry.get("available")]
    shown = [f for f in FIGURES if any(table[f.shown_with or f.key].values())] or list(FIGURES)
    cols = min(len(shown), 5)
    rows = -(-len(shown) // cols)
    height = 4.25 * rows
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, height), squeeze=False)
    bar = 0.8 / max(len(names), 1)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    for ax, figure in zip(axes.flat, shown, strict=False):
        columns = subscribers if figure.per_n else ["all"]
        for i, name in enumerate(names):
            cells = table[figure.key].get(name, {})
            xs = [c + i * bar for c in range(len(columns))]
            ys = [cells.get(col, {}).get("value") or 0.0 for col in columns]
            ax.bar(xs, ys, width=bar, label=name, color=f"C{i}")
            for x, col in zip(xs, columns, strict=True):
                if cells.get(col, {}).get("value") is None and col in cells:
                    # no value because the server could not keep up: say so
                    ax.annotate(
                        "!",
                        (x, 0),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        color=f"C{i}",
                        fontweight="bold",
                        xycoords=("data", "axes fraction"),
                    )
        ax.set_title(
            figure.title
            + (" (higher is better)" if figure.better == "higher" else " (lower is better)"),
            fontsize=9,
        )
        ax.set_xticks([c + 0.4 - bar / 2 for c in range(len(columns))])
        ax.set_xticklabels([f"N={int(c):,}" if c != "all" else "" for c in columns])
        measured = any(cell.get("value") for cells in table[figure.key].values()
                       for cell in cells.values())
        if figure.source in ("fanout", "latency") and measured:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=len(names),
        fontsize=10,
        title="! = overloaded at the fixed rate (no latency figure)",
    )
    fig.suptitle(
        "Nucleus Stream benchmark: room broadcast, server on one core, load generator on the other"
    )
    fig.tight_layout(rect=(0, 0.7 / height, 1, 1))  # 0.7 in at the bottom for the legend
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
