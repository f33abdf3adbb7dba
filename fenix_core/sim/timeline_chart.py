"""Draw a :class:`~fenix_core.sim.timeline.Timeline` as a Gantt chart (SVG or PNG).

Needs matplotlib (``pip install 'fenix-core[plot]'``); it uses the Agg backend
and never opens a window. Each host is one lane (draining, in maintenance,
done, failed); below, each group is one lane whose bars show how many of its
members were impacted at once, against its ``max_impacted_members``. In the
SVG every host bar is a group with the id ``host-<name>`` and every group
lane ``group-<id>``, so tools can find them.

Above :data:`MAX_HOST_LANES` hosts a lane per host is unreadable: the hosts
are then drawn by wave, in at most about :data:`BUNDLED_LANES` lanes
(``lane-<n>``): small consecutive waves share a lane, a large wave is split
over several (its hosts in the order they started); a lane holds only the
draining and maintenance intervals of its hosts, and a lane on top shows how
many hosts are out of service at once (``hosts-out``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ..errors import InvalidInput
from .preview import hosts_out_steps
from .timeline import GroupLane, HostLane, Timeline

__all__ = ["BUNDLED_LANES", "FORMATS", "MAX_HOST_LANES", "bundle_hosts", "render_timeline"]

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
#: The most hosts drawn one lane each; more are drawn by wave.
MAX_HOST_LANES = 60
#: About how many lanes the hosts take when drawn by wave.
BUNDLED_LANES = 40


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
    bundles = bundle_hosts(timeline) if len(hosts) > MAX_HOST_LANES else None
    groups = sorted(timeline.groups, key=lambda g: (-g.peak, g.group_id))[:_MAX_GROUP_LANES]
    lanes = len(hosts) if bundles is None else len(bundles) + 2
    rows = lanes + len(groups)
    height = min(2.0 + 0.22 * rows, 40.0)
    ratios = [max(lanes, 1), max(len(groups), 1)] if groups else [1]
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
        if bundles is None:
            _host_lanes(axes[0][0], hosts, timeline, scale)
        else:
            _bundled_lanes(axes[0][0], bundles, timeline, scale)
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
        spans, colours = _active(host, timeline, scale)
        if host.maintenance_start is not None:
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


def bundle_hosts(
    timeline: Timeline, lanes: int = BUNDLED_LANES
) -> list[tuple[str, list[HostLane]]]:
    """The hosts that took part, in lanes of at most ``ceil(hosts / lanes)``
    each, by wave: consecutive small waves share a lane, a larger wave is
    split (its hosts in the order they started). Each lane has its label."""
    waves = timeline.waves()
    size = max(1, -(-sum(len(w) for w in waves) // max(1, lanes)))
    out: list[tuple[str, list[HostLane]]] = []
    pending: list[HostLane] = []
    first = 0

    def flush(last: int) -> None:
        if pending:
            name = f"wave {first + 1}" if first == last else f"waves {first + 1}-{last + 1}"
            out.append((f"{name}: {len(pending)} hosts", list(pending)))
            pending.clear()

    for index, wave in enumerate(waves):
        if len(wave) > size:
            flush(index - 1)
            ordered = sorted(wave, key=lambda h: (h.drain_start or h.maintenance_start, h.name))
            parts = -(-len(ordered) // size)
            for part in range(parts):
                chunk = ordered[part * size : (part + 1) * size]
                out.append((f"wave {index + 1} ({part + 1}/{parts}): {len(chunk)} hosts", chunk))
            first = index + 1
            continue
        if len(pending) + len(wave) > size:
            flush(index - 1)
        if not pending:
            first = index
        pending.extend(wave)
    flush(len(waves) - 1)
    return out


def _bundled_lanes(
    axis: object, bundles: list[tuple[str, list[HostLane]]], timeline: Timeline, scale: float
) -> None:
    """The lanes of :func:`bundle_hosts` (overlapping intervals darken), under
    a lane of the hosts out of service at once."""
    from matplotlib.axes import Axes

    assert isinstance(axis, Axes)
    steps = hosts_out_steps(timeline)
    peak = max((count for _, count in steps), default=0) or 1
    if steps:
        xs = [when / scale for when, _ in steps] + [
            max(timeline.makespan / scale, steps[-1][0] / scale)
        ]
        ys = [0.5 - 1.0 * count / peak for _, count in steps]
        area = axis.stairs(
            ys, xs, baseline=0.5, fill=True, color=_COLOURS["maintenance"], alpha=0.5
        )
        area.set_gid("hosts-out")
    labels = [f"hosts out at once (peak {peak})"]
    for index, (label, hosts) in enumerate(bundles):
        row = index + 1
        spans: list[tuple[float, float]] = []
        colours: list[str] = []
        for host in hosts:
            host_spans, host_colours = _active(host, timeline, scale)
            spans += host_spans
            colours += host_colours
        bars = axis.broken_barh(spans, (row - 0.4, 0.8), facecolors=colours, alpha=0.4)
        bars.set_gid(f"lane-{row}")
        labels.append(label)
    axis.set_yticks(range(len(labels)), labels, fontsize=7)
    axis.set_ylim(len(labels) - 0.5, -0.5)
    axis.set_ylabel(f"{len(timeline.hosts)} hosts, by wave")
    axis.grid(axis="x", alpha=0.3)


def _active(
    host: HostLane, timeline: Timeline, scale: float
) -> tuple[list[tuple[float, float]], list[str]]:
    """A host's draining and maintenance bars, and their colours."""
    spans: list[tuple[float, float]] = []
    colours: list[str] = []
    maint = host.maintenance_start
    if host.drain_start is not None:
        spans.append(_span(host.drain_start, maint or host.end or timeline.end, timeline, scale))
        colours.append(_COLOURS["draining"])
    if maint is not None:
        spans.append(_span(maint, host.end or timeline.end, timeline, scale))
        colours.append(_COLOURS["failed" if host.state == "FAILED" else "maintenance"])
    return spans, colours


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
