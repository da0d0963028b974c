"""
The reconnect storm's report: the summary table, the chart, and the profile summary.

Inputs are the JSON-ready dicts of ``bench.storm`` (one load generator report
per scenario, with the harness's ``server`` figures added); nothing here runs
anything.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["render_storm_chart", "render_storm_table", "summarize_profile"]

Entry = dict[str, Any]

TITLES = {"cut": "links cut, server up", "restart": "server restarted"}
_WIDTH = 34


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:,.0f} MiB"


def _rows() -> list[tuple[str, Callable[[str, Entry], str]]]:
    def back(name: str, r: Entry) -> str:
        if not r.get("all_back"):
            return f"NO: {r.get('left_behind', '?')} left behind"
        since = "the cut" if name == "cut" else "reachable"
        return f"{_s(r.get('all_back_s'))} after {since}"

    def per_client(name: str, r: Entry) -> str:
        h = r.get("back_ms", {})
        return f"{h.get('p50', 0) / 1000:.2f} / {h.get('p99', 0) / 1000:.2f} s" if h.get(
            "count") else "-"

    def down(name: str, r: Entry) -> str:
        if name != "restart":
            return "-"
        h = r.get("harness", {})
        text = _s(r.get("downtime_s"))
        if "exited_s" in h:
            text += f" (stop {h['exited_s'] - h.get('sigterm_s', 0):.1f} s)"
        return text

    def peak(name: str, r: Entry) -> str:
        opened = r.get("per_bucket", {}).get("opened", [])
        return f"{max(opened):,}" if opened else "-"

    def attempts(name: str, r: Entry) -> str:
        a = r.get("attempts", {})
        failed = sum(v for k, v in a.items() if k.startswith("failed_"))
        return f"{a.get('dials', 0):,} ({failed:,} failed)"

    def rss(name: str, r: Entry) -> str:
        s = r.get("server", {})
        peak_kib = max(s.get("rss_peak_kib") or 0, s.get("rss_hwm_kib") or 0) or None
        return f"{_mib(s.get('rss_before_kib'))} -> {_mib(peak_kib)}"

    def cpu(name: str, r: Entry) -> str:
        s = r.get("server", {})
        if s.get("cpu_s") is None:
            return "-"
        share = s.get("cpu_share")
        return f"{s['cpu_s']:.2f} s" + (f" ({share:.0%} of a core)" if share is not None else "")

    def waited(name: str, r: Entry) -> str:
        wait = r.get("server", {}).get("run_queue_wait_s")
        return "-" if wait is None else f"{wait:.2f} s"

    def collections(name: str, r: Entry) -> str:
        g = r.get("server", {}).get("gc")
        if not g:
            return "-"
        return (f"{g['storm_count']} ({g['storm_full']} full) {g['storm_total_ms'] / 1000:.1f} s,"
                f" max {g['storm_max_ms'] / 1000:.2f} s")

    def joins(name: str, r: Entry) -> str:
        c = r.get("check", {})
        return f"{c.get('recovered_true', 0):,} / {c.get('clients_with_gap', 0):,}"

    def losses(name: str, r: Entry) -> str:
        c = r.get("check", {})
        return f"{c.get('lost', 0)} / {c.get('duplicates', 0)} / {c.get('tail_missing', 0)}"

    def rtt(name: str, r: Entry) -> str:
        t = r.get("traffic", {})
        return f"{t.get('publish_rtt_storm_max_ms', 0):,.0f} ms"

    def lg(name: str, r: Entry) -> str:
        share = r.get("loadgen_storm_cpu_share")
        wait = r.get("loadgen_storm_wait_s")
        return "-" if share is None else f"{share:.0%}" + (
            f" (waited {wait:.2f} s)" if wait else "")

    def verdict(name: str, r: Entry) -> str:
        return "ok" if r.get("check", {}).get("ok") else "FAILED"

    def target(name: str, r: Entry) -> str:
        if r.get("all_back_s") is None:
            return "missed"
        return "met" if r.get("within_target") else f"missed by {r['all_back_s'] - 5:.1f} s"

    return [
        ("every client back", back),
        ("per client, p50 / p99", per_client),
        ("server unreachable", down),
        ("most upgrades in 100 ms", peak),
        ("connection attempts", attempts),
        ("server RSS before -> peak", rss),
        ("server CPU during the storm", cpu),
        ("server waited for its core", waited),
        ("GC pauses in the storm", collections),
        ("recovered / with a gap", joins),
        ("lost / duplicated / tail missing", losses),
        ("publish round trip, max", rtt),
        ("load generator CPU", lg),
        ("checks", verdict),
        ("5 s target", target),
    ]


def render_storm_table(plan: Entry, results: dict[str, Entry]) -> str:
    """One column per scenario that ran, one row per figure."""
    lines = [
        f"Reconnect storm: {plan['clients']:,} nucleus.v1 clients in {plan['rooms']} rooms, "
        f"{plan['rate']:g} messages/s per room",
        "",
        " " * _WIDTH + "".join(f"{TITLES.get(name, name):>{_WIDTH}}" for name in results),
    ]
    for i, (label, cell) in enumerate(_rows()):
        row = f"{label:<{_WIDTH}}"
        for name, result in results.items():
            failed = "error (below)" if i == 0 else "-"
            row += f"{failed if 'error' in result else cell(name, result):>{_WIDTH}}"
        lines.append(row)
    for name, result in results.items():
        if "error" in result:
            lines += ["", f"{TITLES.get(name, name)}: error: {result['error']}"]
    return "\n".join(lines)


def render_storm_chart(plan: Entry, results: dict[str, Entry], path: Path) -> None:
    """Per scenario: connections completed per 100 ms and clients back (above), the
    server's RSS and CPU (below). Needs matplotlib (Agg backend, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {name: r for name, r in results.items() if "error" not in r}
    if not shown:
        return
    fig, axes = plt.subplots(2, len(shown), figsize=(8 * len(shown), 8), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]}, sharex="col")
    for column, (name, r) in enumerate(shown.items()):
        top, bottom = axes[0][column], axes[1][column]
        series = r["per_bucket"]
        width = series["bucket_ms"] / 1000
        xs = [i * width for i in range(len(series["opened"]))]
        top.bar(xs, series["opened"], width=width, align="edge", color="C0",
                label="connections completed (101) per 100 ms")
        failed = series.get("failed", [])
        # The scale is the completions'; failures above it are clipped and labelled.
        ceiling = 1.3 * max(series["opened"] or [1])
        if any(failed):
            top.bar(xs[: len(failed)], [min(f, ceiling) for f in failed], width=width,
                    align="edge", color="C3", alpha=0.6, label="attempts failed per 100 ms")
            clipped = sorted(((f, i) for i, f in enumerate(failed) if f > ceiling), reverse=True)
            labelled: list[int] = []
            for count, i in clipped:
                if all(abs(i - j) > 100 for j in labelled) and len(labelled) < 3:
                    labelled.append(i)
                    top.annotate(f"{count:,} failed", (xs[i], ceiling), xytext=(2, -10),
                                 textcoords="offset points", fontsize=7, color="C3")
        top.set_ylim(0, ceiling)
        share = top.twinx()
        total, back = 0, []
        for count in series["back"]:
            total += count
            back.append(100 * total / r["clients"])
        share.step([x + width for x in xs[: len(back)]], back, where="post", color="C2",
                   label="clients back (%)")
        share.set_ylim(0, 105)
        share.set_ylabel("clients back, %")
        marks = ([("cut", 0.0)] if name == "cut"
                 else [("SIGTERM", r.get("harness", {}).get("sigterm_s", 0.0))])
        if name == "restart" and r.get("downtime_s") is not None:
            marks.append(("reachable", r["downtime_s"]))
        if r.get("since_disruption_s") is not None:
            marks.append(("all back", r["since_disruption_s"]))
        for label, x in marks:
            top.axvline(x, color="grey", linestyle="--", linewidth=0.8)
            top.annotate(label, (x, 0), xycoords=("data", "axes fraction"), xytext=(3, 3),
                         textcoords="offset points", fontsize=8, color="grey", rotation=90)
        headline = (f"all back {r['all_back_s']:.2f} s after "
                    f"{'the cut' if name == 'cut' else 'the server was reachable'}"
                    if r.get("all_back_s") is not None else f"{r.get('left_behind')} left behind")
        top.set_title(f"{TITLES.get(name, name)}: {headline}", fontsize=10)
        top.set_ylabel("per 100 ms")
        handles = top.get_legend_handles_labels()
        extra = share.get_legend_handles_labels()
        top.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8, loc="center right")
        top.grid(axis="y", alpha=0.3)

        timeline = r.get("server", {}).get("timeline", {})
        ts = timeline.get("t_s", [])
        end = (xs[-1] + width if xs else 1.0) + 1.0
        keep = [i for i, t in enumerate(ts) if -1.0 <= t <= end]
        bottom.plot([ts[i] for i in keep], [timeline["rss_mib"][i] for i in keep], color="C4",
                    label="server RSS, MiB")
        bottom.set_ylabel("server RSS, MiB")
        bottom.set_ylim(bottom=0)
        cpu = bottom.twinx()
        cpu.plot([ts[i] for i in keep],
                 [100 * v if not math.isnan(v) else float("nan")
                  for v in (timeline["cpu_share"][i] for i in keep)],
                 color="C1", linewidth=0.8, label="server CPU, % of a core")
        if "wait_share" in timeline:  # ready to run, but another process had the core
            cpu.plot([ts[i] for i in keep],
                     [100 * v if not math.isnan(v) else float("nan")
                      for v in (timeline["wait_share"][i] for i in keep)],
                     color="grey", linewidth=0.6, linestyle=":",
                     label="server waiting for its core, %")
        cpu.set_ylim(0, 110)
        for at, _, ms, _ in r.get("server", {}).get("gc", {}).get("pauses", []):
            if -1.0 <= at <= end:  # logged when the collection ended
                bottom.axvspan(at - ms / 1000, at, color="C3", alpha=0.3, linewidth=0)
        cpu.set_ylabel("server CPU, % of a core")
        lines = bottom.get_legend_handles_labels()
        more = cpu.get_legend_handles_labels()
        from matplotlib.patches import Patch

        gc_patch = Patch(color="C3", alpha=0.3, label="garbage collection (loop stopped)")
        bottom.legend(lines[0] + more[0] + [gc_patch], lines[1] + more[1] + [gc_patch.get_label()],
                      fontsize=8, loc="lower right")
        bottom.set_xlabel("seconds since " + (
            "the cut" if name == "cut" else "the server closed the first link"))
        bottom.set_xlim(-1.0, end)
        bottom.grid(alpha=0.3)
    fig.suptitle(
        f"Reconnect storm: {plan['clients']:,} nucleus.v1 clients, {plan['rooms']} rooms, "
        f"{plan['rate']:g} msg/s per room; server on one core, load generator on the other")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


_LINE = re.compile(r":\d+\)$")


def _frame(text: str) -> str:
    """``function (path/to/file.py:123)`` -> ``function (file.py)``: one entry per function."""
    name, _, where = text.partition(" (")
    where = _LINE.sub(")", "(" + where) if where else ""
    if "/" in where:
        where = "(" + where.rsplit("/", 1)[-1]
    return f"{name} {where}".strip()


def summarize_profile(path: Path, seconds: float, *, rate: int, top: int = 15) -> Entry:
    """py-spy's raw output (collapsed stacks) as the top functions, by own and by total time.

    Shares are of all samples the rate allows over ``seconds``: the rest of the
    time the server was idle (py-spy does not record idle stacks by default).
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    possible = max(seconds * rate, 1.0)
    return {
        "file": str(path),
        "seconds": round(seconds, 2),
        "samples": samples,
        "busy_share": round(samples / possible, 3),
        "own": [[name, round(n / possible, 4)] for name, n in own.most_common(top)],
        "total": [[name, round(n / possible, 4)] for name, n in total.most_common(top)],
    }
