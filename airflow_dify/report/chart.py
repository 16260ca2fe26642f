"""PNG chart of the daily summary: tokens per day and cost per day (per currency), stacked bars;
spend per DAG/app over the range; each pilot's projection (with its interval) beside what the
batch that followed really spent.

matplotlib (the ``report`` extra) is the standard choice and needs no display: the figure is
drawn with the Agg canvas directly, without pyplot, so no global backend is switched and it is
safe inside a worker thread. Prices are converted to float only to draw bar heights; the totals
printed in the titles are exact Decimal sums.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from airflow_dify.report.usage import DailyUsage

STACK_BY = ("table_name", "app")
MAX_CURRENCY_PANELS = 3
#: Up to this many days, days without usage get an empty slot (a gap must look like a gap).
MAX_FILLED_DAYS = 92


def _days(rows: Sequence[DailyUsage]) -> tuple[list[dt.date], bool]:
    """The x axis; True when it is every day of the span, False when empty days were left out."""
    seen = sorted({r.date for r in rows})
    if not seen or (seen[-1] - seen[0]).days >= MAX_FILLED_DAYS:
        return seen, not seen
    return [seen[0] + dt.timedelta(days=i) for i in range((seen[-1] - seen[0]).days + 1)], True


def _money(value: Decimal) -> str:
    return format(value.normalize(), "f")  # 0.1607400000 (NUMERIC scale) -> 0.16074


def _series(
    rows: Sequence[DailyUsage], days: list[dt.date], stack_by: str, value: str, currency: str | None = None
) -> dict[str, list[float]]:
    index = {d: i for i, d in enumerate(days)}
    out: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(days))
    for r in rows:
        if currency is not None and r.currency != currency:
            continue
        out[getattr(r, stack_by) or "(none)"][index[r.date]] += float(getattr(r, value))
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class ProjectionVsActual:
    """One pilot: its projection for the rest of the table, and the batch's real spend on it."""

    label: str
    projected: Decimal
    low: Decimal
    high: Decimal
    actual: Decimal
    currency: str

    @property
    def inside(self) -> bool:
        return self.low <= self.actual <= self.high


def render_cost_chart(
    rows: Sequence[DailyUsage],
    path: str | Path,
    *,
    stack_by: str = "table_name",
    title: str | None = None,
    projections: Sequence[ProjectionVsActual] = (),
) -> Path:
    """Write the chart to ``path`` (parent directories are created) and return the path."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "the cost chart needs matplotlib: pip install 'airflow-provider-dify[report]'"
        ) from exc
    if stack_by not in STACK_BY:
        raise ValueError(f"stack_by must be one of {STACK_BY}, got {stack_by!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:  # still write a PNG: a report that silently has no chart looks like a failure
        fig = Figure(figsize=(8, 2.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.axis("off")
        ax.text(
            0.5, 0.5, title or "Dify usage: no answered rows in the reported range", ha="center", va="center"
        )
        fig.savefig(path, format="png")
        return path
    days, contiguous = _days(rows)
    # One color per table/app in every panel, even where some have no bar.
    colors = {n: f"C{i % 10}" for i, n in enumerate(sorted({getattr(r, stack_by) or "(none)" for r in rows}))}
    currencies = sorted({r.currency for r in rows if r.currency})[:MAX_CURRENCY_PANELS]
    panels = 1 + max(len(currencies), 1)
    extra = (1 if currencies else 0) + (1 if projections else 0)
    fig = Figure(figsize=(11, 3.2 * (panels + extra)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    every = fig.subplots(panels + extra, 1, squeeze=False)[:, 0]
    axes, after = every[:panels], list(every[panels:])
    for ax in axes[1:]:
        ax.sharex(axes[0])
    labels = [d.isoformat() for d in days]
    x = list(range(len(days)))
    grand_tokens = sum(r.total_tokens for r in rows)
    fig.suptitle(title or f"Dify usage per day (UTC), stacked by {stack_by.replace('_', ' ')}", fontsize=13)

    def stacked(ax, series: dict[str, list[float]], ylabel: str, heading: str) -> None:
        bottom = [0.0] * len(days)
        for name, heights in series.items():
            ax.bar(x, heights, bottom=bottom, label=name, width=0.8, color=colors[name])
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_ylabel(ylabel)
        ax.set_title(heading, fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
        # Zero-height segments stacked on a tall bar are sticky edges that pin the top of the
        # axis to it; without them the usual headroom above the tallest bar comes back.
        ax.use_sticky_edges = False
        ax.margins(y=0.08)
        ax.set_ylim(bottom=0)
        if series:  # outside the plot: a legend must never hide a bar
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)

    stacked(
        axes[0], _series(rows, days, stack_by, "total_tokens"), "tokens", f"Total tokens: {grand_tokens:,}"
    )
    priced: list[str | None] = list(currencies) if currencies else [None]
    for ax, currency in zip(axes[1:], priced, strict=False):
        if currency is None:
            ax.text(0.5, 0.5, "no priced rows (workflow apps report tokens only)", ha="center", va="center")
            ax.set_ylabel("cost")
            continue
        spent = sum((r.total_price for r in rows if r.currency == currency), Decimal(0))
        stacked(
            ax,
            _series(rows, days, stack_by, "total_price", currency),
            f"cost ({currency})",
            f"Total cost: {_money(spent)} {currency}",
        )
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    axes[-1].set_xlabel("day (UTC)" if contiguous else "day (UTC); days without usage are left out")
    if currencies:
        _spend_per_app(after.pop(0), rows, currencies[0])
    if projections:
        _projections(after.pop(0), projections)
    fig.savefig(path, format="png")
    return path


def _spend_per_app(ax, rows: Sequence[DailyUsage], currency: str) -> None:
    """Horizontal bars: the range's spend per DAG/app label (the ledger labels ``dag_id/app_mode``)."""
    spend: dict[str, Decimal] = defaultdict(Decimal)
    for r in rows:
        if r.currency == currency:
            spend[r.app or "(none)"] += r.total_price
    names = sorted(spend, key=lambda n: spend[n])
    ax.barh(names, [float(spend[n]) for n in names], color="C0")
    for i, n in enumerate(names):
        ax.text(float(spend[n]), i, f" {_money(spend[n])}", va="center", fontsize=8)
    ax.set_xlabel(f"cost ({currency})")
    ax.set_title(f"Spend per DAG/app over the range ({currency})", fontsize=10, loc="left")
    ax.margins(x=0.15)
    ax.grid(axis="x", alpha=0.3)


def _projections(ax, projections: Sequence[ProjectionVsActual]) -> None:
    """Per pilot: the projection with its interval (error bar) and the actual spend (bar)."""
    x = list(range(len(projections)))
    actual = [float(p.actual) for p in projections]
    ax.bar(x, actual, width=0.5, color="C2", label="actual (ledger)")
    mid = [float(p.projected) for p in projections]
    below = [float(p.projected - p.low) for p in projections]
    above = [float(p.high - p.projected) for p in projections]
    ax.errorbar(x, mid, yerr=[below, above], fmt="o", color="C3", capsize=6, label="projected, interval")
    inside = sum(p.inside for p in projections)
    ax.set_title(
        f"Pilot projection vs actual spend on the rest: {inside}/{len(projections)} inside the interval",
        fontsize=10,
        loc="left",
    )
    ax.set_xticks(x, [p.label for p in projections], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"cost ({projections[0].currency})")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


__all__ = ["ProjectionVsActual", "render_cost_chart"]
