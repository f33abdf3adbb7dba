"""Draw a :class:`~fenix_core.timeline.Timeline` as a Gantt chart (SVG or PNG).

Needs matplotlib (``pip install 'fenix-core[plot]'``); it uses the Agg backend
and never opens a window. Each host is one lane (draining, in maintenance,
done, failed); below, each group is one lane whose bars show how many of its
members were impacted at once, against its ``max_impacted_members``. In the
SVG every host bar is a group with the id ``host-<name>`` and every group
lane ``group-<id>``, so tools can find them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from .errors import InvalidInput
from .timeline import GroupLane, HostLane, Timeline

__all__ = ["FORMATS", "render_timeline"]

FORMATS = ("svg", "png")

_COLOURS = {
    "draining": "#f5a623",
    "maintenance": "#8e44ad",
    "done": "#7ed389",
    "failed": "#d0021b",
    "impact": "#4a90e2",
    "over": "#d0021b",
}
_MAX_GROUP_LANES = 24


def render_timeline(timeline: Timeline, path: str | Path, *, title: str | None = None) -> Path:
    """Write the chart to ``path``; the format comes from its suffix (.svg, .png)."""
    out = Path(path)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InvalidInput("timeline", f"the file must end in .svg or .png, got {out.name!r}")
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - depends on the installation
        raise InvalidInput(
            "timeline", "drawing needs matplotlib: pip install 'fenix-core[plot]'"
        ) from None
    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.patches import Patch

    hosts = list(timeline.hosts)
    groups = sorted(timeline.groups, key=lambda g: (-g.peak, g.group_id))[:_MAX_GROUP_LANES]
    rows = len(hosts) + len(groups)
    height = min(2.0 + 0.22 * rows, 40.0)
    ratios = [max(len(hosts), 1), max(len(groups), 1)] if groups else [1]
    fig, axes = pyplot.subplots(
        len(ratios),
        1,
        figsize=(10, height),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": ratios},
    )
    try:
        scale, unit = _scale(timeline.makespan)
        _host_lanes(axes[0][0], hosts, timeline, scale)
        if groups:
            _group_lanes(axes[1][0], groups, timeline, scale)
        axes[-1][0].set_xlabel(f"{unit} since the session started")
        axes[0][0].set_title(
            title
            or f"{timeline.workflow} session {timeline.state}, "
            f"makespan {timeline.makespan / scale:.1f} {unit}"
        )
        legend = [
            Patch(color=_COLOURS[k], label=label)
            for k, label in (
                ("draining", "draining"),
                ("maintenance", "in maintenance"),
                ("done", "done"),
                ("failed", "failed"),
            )
        ]
        if groups:
            legend.append(Patch(color=_COLOURS["impact"], label="group members impacted"))
        fig.legend(handles=legend, loc="lower center", ncol=len(legend), frameon=False)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format=fmt, dpi=110 if fmt == "png" else None)
    finally:
        pyplot.close(fig)
    return out


def _scale(seconds: float) -> tuple[float, str]:
    if seconds >= 3 * 3600:
        return 3600.0, "hours"
    if seconds >= 180:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _x(when: datetime, timeline: Timeline, scale: float) -> float:
    return (when - timeline.start).total_seconds() / scale


def _host_lanes(axis: object, hosts: list[HostLane], timeline: Timeline, scale: float) -> None:
    from matplotlib.axes import Axes

    assert isinstance(axis, Axes)
    end = _x(timeline.end, timeline, scale)
    for row, host in enumerate(hosts):
        spans: list[tuple[float, float]] = []
        colours: list[str] = []
        maint = host.maintenance_start
        if host.drain_start is not None:
            stop = maint or host.end or timeline.end
            spans.append(_span(host.drain_start, stop, timeline, scale))
            colours.append(_COLOURS["draining"])
        if maint is not None:
            stop = host.end or timeline.end
            spans.append(_span(maint, stop, timeline, scale))
            colours.append(_COLOURS["failed" if host.state == "FAILED" else "maintenance"])
            if host.end is not None and host.state == "MAINTAINED":
                start = _x(host.end, timeline, scale)
                spans.append((start, max(end - start, 0.0)))
                colours.append(_COLOURS["done"])
        elif host.state == "FAILED" and host.end is not None:
            spans.append(_span(host.end, timeline.end, timeline, scale))
            colours.append(_COLOURS["failed"])
        bars = axis.broken_barh(spans, (row - 0.4, 0.8), facecolors=colours)
        bars.set_gid(f"host-{host.name}")
    axis.set_yticks(range(len(hosts)), [h.name for h in hosts], fontsize=7)
    axis.set_ylim(len(hosts) - 0.5, -0.5)
    axis.set_ylabel("hosts")
    axis.grid(axis="x", alpha=0.3)


def _span(start: datetime, stop: datetime, timeline: Timeline, scale: float) -> tuple[float, float]:
    a = _x(start, timeline, scale)
    b = _x(stop, timeline, scale)
    # A zero-length phase still shows as a sliver.
    return a, max(b - a, timeline.makespan / scale / 400)


def _group_lanes(axis: object, groups: list[GroupLane], timeline: Timeline, scale: float) -> None:
    from matplotlib.axes import Axes

    assert isinstance(axis, Axes)
    labels = []
    for row, group in enumerate(groups):
        limit = group.limit
        top = max(limit or 0, group.peak, 1)
        spans: list[tuple[float, float]] = []
        colours: list[tuple[float, float, float, float] | str] = []
        steps = list(group.steps)
        for (when, count), nxt in zip(steps, [*steps[1:], (timeline.end, 0)], strict=True):
            if count <= 0:
                continue
            spans.append(_span(when, nxt[0], timeline, scale))
            over = limit is not None and count > limit
            colours.append(_COLOURS["over"] if over else _alpha(_COLOURS["impact"], count / top))
        bars = axis.broken_barh(spans, (row - 0.4, 0.8), facecolors=colours)
        bars.set_gid(f"group-{group.group_id}")
        shown_limit = "-" if limit is None else str(limit)
        labels.append(f"{group.group_id} (peak {group.peak}/{shown_limit})")
    axis.set_yticks(range(len(groups)), labels, fontsize=7)
    axis.set_ylim(len(groups) - 0.5, -0.5)
    axis.set_ylabel("groups")
    axis.grid(axis="x", alpha=0.3)


def _alpha(colour: str, fraction: float) -> tuple[float, float, float, float]:
    from matplotlib.colors import to_rgba

    red, green, blue, _ = to_rgba(colour)
    return red, green, blue, 0.35 + 0.65 * min(max(fraction, 0.0), 1.0)
