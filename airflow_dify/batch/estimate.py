"""Project the tokens and cost of a batch's remaining rows from a pilot sample, with an interval.

The model, per row (the same form for tokens)::

    price = a + b * chars + e

``chars`` is the prompt's length as sent (query plus input values). ``a`` and ``b`` are fitted by
ordinary least squares on the sample; the rest's total is then ``a * m + b * S`` for its ``m``
rows of ``S`` characters in all, so the rest is described by its count and length sum alone
(:class:`LengthTally`, filled while streaming the rows, never holding them).

The interval is for the **total** of the rest, by bootstrap. Each of ``resamples`` rounds draws the
sample rows with replacement, refits ``a`` and ``b``, predicts the rest's total and adds one
resampled residual of that fit per predicted row, so the interval covers both what the sample does
not pin down about the line and the row-to-row spread of the rows still to come (a bootstrap of
the line alone is far too narrow when few rows remain). Residuals are inflated by
``sqrt(n / (n - p))`` for the parameters the fit used. Past :data:`EXACT_NOISE_ROWS` remaining rows
the sum of their resampled residuals is drawn from its normal limit (``m`` x the residuals' mean
and variance): the same distribution to within the central limit theorem, at O(1) per round.
The interval is the central ``confidence`` share of the rounds' totals (percentile bootstrap).

Fewer than :data:`MIN_OLS_ROWS` rows, or all of one length: no slope can be fitted, and the model
is the mean per row x ``m``, with a bootstrap of the mean (model ``"mean"``).

Pure Python, Airflow-free, seeded (the same inputs and seed give the same numbers). Money is
``Decimal`` at the edges (the sample's sum is exact); floats inside the model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from airflow_dify.batch.errors import EstimateError

MODEL_OLS = "ols"
MODEL_MEAN = "mean"
#: Nothing left to project (every row sampled, or none pending).
MODEL_NONE = "none"
MIN_OLS_ROWS = 3
DEFAULT_RESAMPLES = 2000
#: Up to this many remaining rows each gets its own resampled residual; past it, their normal sum.
EXACT_NOISE_ROWS = 500
#: Price precision when the sample has no priced row (Dify prices have 7 decimals).
DEFAULT_PRICE_QUANTUM = Decimal("0.0000001")


@dataclass(frozen=True)
class SampleRow:
    """One answered sample row: prompt length (characters), tokens and exact price of its call."""

    length: int
    tokens: int
    price: Decimal
    succeeded: bool = True


@dataclass
class LengthTally:
    """Count, sum and range of prompt lengths, added one row at a time (rows are not kept)."""

    count: int = 0
    total: int = 0
    shortest: int | None = None
    longest: int | None = None

    def add(self, length: int) -> None:
        self.count += 1
        self.total += length
        self.shortest = length if self.shortest is None else min(self.shortest, length)
        self.longest = length if self.longest is None else max(self.longest, length)

    @classmethod
    def of(cls, lengths: Iterable[int]) -> LengthTally:
        tally = cls()
        for length in lengths:
            tally.add(length)
        return tally

    def without(self, lengths: Sequence[int]) -> LengthTally:
        """The tally minus rows of these lengths (the range stays that of every row tallied)."""
        if len(lengths) > self.count:
            raise ValueError(f"cannot remove {len(lengths)} rows from a tally of {self.count}")
        return LengthTally(self.count - len(lengths), self.total - sum(lengths), self.shortest, self.longest)


@dataclass(frozen=True)
class Fit:
    """Per-row value = ``intercept + slope * chars`` (slope 0 for the mean model)."""

    intercept: float
    slope: float

    def total(self, rows: int, chars: int) -> float:
        return self.intercept * rows + self.slope * chars


@dataclass(frozen=True)
class Estimate:
    """The projection for the rows left after the sample (``pending``), and the sample's own totals.

    ``projected_price`` / ``projected_tokens`` and their ``low`` / ``high`` bounds are for the rest
    only; ``projected_total_price`` adds the sample's exact price.
    """

    model: str
    confidence: float
    resamples: int
    seed: int
    sampled: int
    pending: int
    sample_tokens: int
    sample_price: Decimal
    projected_tokens: int
    tokens_low: int
    tokens_high: int
    projected_price: Decimal
    low: Decimal
    high: Decimal
    price_fit: Fit = field(default_factory=lambda: Fit(0.0, 0.0))
    tokens_fit: Fit = field(default_factory=lambda: Fit(0.0, 0.0))
    #: Prompt lengths (characters) of the sample and of every row tallied: past the sample's
    #: range the line is extrapolated.
    sample_chars: tuple[int, int] | None = None
    pending_chars: tuple[int, int] | None = None

    @property
    def projected_total_price(self) -> Decimal:
        return self.sample_price + self.projected_price

    @property
    def projected_total_tokens(self) -> int:
        return self.sample_tokens + self.projected_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: prices as decimal strings."""
        return {
            "model": self.model,
            "interval_method": (
                f"percentile bootstrap ({self.resamples} resamples of the sample rows, refit, "
                "plus a resampled residual per remaining row)"
            ),
            "confidence": self.confidence,
            "seed": self.seed,
            "sampled": self.sampled,
            "pending": self.pending,
            "sample_tokens": self.sample_tokens,
            "sample_price": decimal_text(self.sample_price),
            "projected_tokens": self.projected_tokens,
            "tokens_low": self.tokens_low,
            "tokens_high": self.tokens_high,
            "projected_price": decimal_text(self.projected_price),
            "low": decimal_text(self.low),
            "high": decimal_text(self.high),
            "projected_total_tokens": self.projected_total_tokens,
            "projected_total_price": decimal_text(self.projected_total_price),
            "price_per_row": {"intercept": self.price_fit.intercept, "per_char": self.price_fit.slope},
            "tokens_per_row": {"intercept": self.tokens_fit.intercept, "per_char": self.tokens_fit.slope},
            "sample_chars": list(self.sample_chars) if self.sample_chars else None,
            "pending_chars": list(self.pending_chars) if self.pending_chars else None,
        }


def check_settings(confidence: float, resamples: int = DEFAULT_RESAMPLES) -> None:
    """ValueError naming the setting when it is out of range."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.9), got {confidence!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ValueError(f"resamples must be an integer >= 100, got {resamples!r}")


def project(
    sample: Sequence[SampleRow],
    rest: LengthTally,
    *,
    confidence: float = 0.9,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
) -> Estimate:
    """Project the tokens and price of the ``rest`` from the ``sample`` (see the module docstring).

    Raises :class:`EstimateError` when rows remain but the sample is empty or every sampled row
    failed (a projection from failures alone would say nothing about answered rows).
    """
    check_settings(confidence, resamples)
    sample = list(sample)
    sample_price = sum((row.price for row in sample), Decimal(0))
    sample_tokens = sum(row.tokens for row in sample)
    quantum = _price_quantum(row.price for row in sample)
    base: dict[str, Any] = {
        "confidence": float(confidence),
        "resamples": resamples,
        "seed": seed,
        "sampled": len(sample),
        "pending": rest.count,
        "sample_tokens": sample_tokens,
        "sample_price": sample_price,
    }
    if rest.count == 0:
        zero = Decimal(0).quantize(quantum)
        return Estimate(
            model=MODEL_NONE,
            projected_tokens=0,
            tokens_low=0,
            tokens_high=0,
            projected_price=zero,
            low=zero,
            high=zero,
            **base,
        )
    if not sample:
        raise EstimateError(
            f"nothing was sampled, so the {rest.count:,} remaining row(s) cannot be projected"
        )
    if not any(row.succeeded for row in sample):
        raise EstimateError(
            f"all {len(sample)} sampled row(s) failed, so there is no answered row to project the "
            f"{rest.count:,} remaining one(s) from; fix the cause (see the rows' error column) and "
            "estimate again"
        )
    xs = [float(row.length) for row in sample]
    prices = [float(row.price) for row in sample]
    tokens = [float(row.tokens) for row in sample]
    model = MODEL_OLS if _has_slope(xs) else MODEL_MEAN
    price_fit, tokens_fit = _fit(xs, prices, model), _fit(xs, tokens, model)
    m, chars = rest.count, rest.total
    price_totals, token_totals = _bootstrap(
        xs, prices, tokens, model, m, chars, resamples, random.Random(seed)
    )
    tail = (1.0 - confidence) / 2.0
    price_point = max(price_fit.total(m, chars), 0.0)
    token_point = max(tokens_fit.total(m, chars), 0.0)
    p_low, p_high = _percentile(price_totals, tail), _percentile(price_totals, 1.0 - tail)
    t_low, t_high = _percentile(token_totals, tail), _percentile(token_totals, 1.0 - tail)
    lengths = [row.length for row in sample]
    spread = None if rest.shortest is None or rest.longest is None else (rest.shortest, rest.longest)
    return Estimate(
        model=model,
        projected_tokens=round(token_point),
        tokens_low=math.floor(min(t_low, token_point)),
        tokens_high=math.ceil(max(t_high, token_point)),
        projected_price=_money(price_point, quantum, ROUND_HALF_EVEN),
        low=_money(min(p_low, price_point), quantum, ROUND_FLOOR),
        high=_money(max(p_high, price_point), quantum, ROUND_CEILING),
        price_fit=price_fit,
        tokens_fit=tokens_fit,
        sample_chars=(min(lengths), max(lengths)),
        pending_chars=spread,
        **base,
    )


def price_cap(high: Any, margin: Any) -> str:
    """``high x margin`` as an exact decimal string: a budget cap (``max_total_price``) from an
    approved projection, e.g. in a DAG's template ``{{ price_cap(estimate['high'], params.margin) }}``."""
    try:
        amount, factor = Decimal(str(high)), Decimal(str(margin))
    except InvalidOperation:
        raise ValueError(f"price_cap needs decimal numbers, got high={high!r}, margin={margin!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"price_cap: high must be a finite amount >= 0, got {high!r}")
    if not factor.is_finite() or factor <= 0:
        raise ValueError(f"price_cap: margin must be > 0, got {margin!r}")
    return decimal_text(amount * factor)


def decimal_text(value: Decimal) -> str:
    """Plain positional notation (``0.0000000``, never ``0E-7``)."""
    return format(value, "f")


# -- the model ------------------------------------------------------------------------------------
def _has_slope(xs: Sequence[float]) -> bool:
    return len(xs) >= MIN_OLS_ROWS and _sxx(xs) > 0.0


def _sxx(xs: Sequence[float]) -> float:
    mean = sum(xs) / len(xs)
    return sum((x - mean) ** 2 for x in xs)


def _fit(xs: Sequence[float], ys: Sequence[float], model: str) -> Fit:
    n = len(xs)
    mean_y = sum(ys) / n
    if model == MODEL_MEAN:
        return Fit(mean_y, 0.0)
    mean_x = sum(xs) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx <= 0.0:  # a resample that drew one length only: no slope in this round
        return Fit(mean_y, 0.0)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    return Fit(mean_y - slope * mean_x, slope)


def _residuals(xs: Sequence[float], ys: Sequence[float], fit: Fit, params: int) -> list[float]:
    n = len(xs)
    # Fitted residuals are smaller than the errors they stand for by the parameters the fit used.
    inflate = math.sqrt(n / (n - params)) if n > params else 1.0
    return [(y - fit.intercept - fit.slope * x) * inflate for x, y in zip(xs, ys, strict=True)]


def _bootstrap(
    xs: Sequence[float],
    prices: Sequence[float],
    tokens: Sequence[float],
    model: str,
    rows: int,
    chars: int,
    resamples: int,
    rng: random.Random,
) -> tuple[list[float], list[float]]:
    """``resamples`` totals of the rest, for price and tokens (same draws for both)."""
    n = len(xs)
    positions = range(n)
    params = 2 if model == MODEL_OLS else 1
    price_totals, token_totals = [], []
    for _ in range(resamples):
        drawn = rng.choices(positions, k=n)
        bx = [xs[i] for i in drawn]
        bp = [prices[i] for i in drawn]
        bt = [tokens[i] for i in drawn]
        p_fit, t_fit = _fit(bx, bp, model), _fit(bx, bt, model)
        p_res = _residuals(bx, bp, p_fit, params)
        t_res = _residuals(bx, bt, t_fit, params)
        p_noise, t_noise = _noise(p_res, t_res, rows, rng)
        price_totals.append(max(p_fit.total(rows, chars) + p_noise, 0.0))
        token_totals.append(max(t_fit.total(rows, chars) + t_noise, 0.0))
    return sorted(price_totals), sorted(token_totals)


def _noise(
    p_res: Sequence[float], t_res: Sequence[float], rows: int, rng: random.Random
) -> tuple[float, float]:
    """The summed residuals of ``rows`` new rows: one resampled residual each, or their normal limit."""
    n = len(p_res)
    if rows <= EXACT_NOISE_ROWS:
        picks = rng.choices(range(n), k=rows)
        return sum(p_res[i] for i in picks), sum(t_res[i] for i in picks)
    z = rng.gauss(0.0, 1.0)
    return _normal_sum(p_res, rows, z), _normal_sum(t_res, rows, z)


def _normal_sum(res: Sequence[float], rows: int, z: float) -> float:
    mean = sum(res) / len(res)
    var = sum((r - mean) ** 2 for r in res) / len(res)
    return rows * mean + math.sqrt(rows * var) * z


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _price_quantum(prices: Iterable[Decimal]) -> Decimal:
    """The finest precision the sample's prices carry (at most 10 decimals, at least 2)."""
    exponents = [p.as_tuple().exponent for p in prices if p.is_finite()]
    ints = [e for e in exponents if isinstance(e, int)]
    if not ints:
        return DEFAULT_PRICE_QUANTUM
    return Decimal(1).scaleb(max(min(ints), -10)).min(Decimal("0.01"))


def _money(value: float, quantum: Decimal, rounding: str) -> Decimal:
    return Decimal(repr(value)).quantize(quantum, rounding=rounding)


__all__ = [
    "DEFAULT_RESAMPLES",
    "EXACT_NOISE_ROWS",
    "MODEL_MEAN",
    "MODEL_NONE",
    "MODEL_OLS",
    "Estimate",
    "Fit",
    "LengthTally",
    "SampleRow",
    "check_settings",
    "decimal_text",
    "price_cap",
    "project",
]
