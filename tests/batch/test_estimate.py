"""The pilot projection on its own: synthetic samples with a known cost line, degenerate inputs.

The coverage tests are the ones that can fail for a wrong interval: a bootstrap of the line alone
(no per-row noise) covers far less than 90 % when few rows remain; a missing residual inflation or
a wrong percentile shows up as coverage off the nominal level too.
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from airflow_dify.batch.errors import EstimateError
from airflow_dify.batch.estimate import (
    EXACT_NOISE_ROWS,
    MODEL_MEAN,
    MODEL_NONE,
    MODEL_OLS,
    LengthTally,
    SampleRow,
    price_cap,
    project,
)
from airflow_dify.batch.pilot import Reservoir

# The "true" per-row cost: price = A + B * chars + noise (USD), tokens = TA + TB * chars + noise.
A, B, NOISE = 0.00002, 0.0000004, 0.00004
TA, TB, TOKEN_NOISE = 15.0, 0.3, 40.0


def _rows(rng: random.Random, lengths: list[int]) -> list[tuple[int, int, Decimal]]:
    out = []
    for n in lengths:
        price = max(A + B * n + rng.gauss(0, NOISE), 0.0)
        tokens = max(round(TA + TB * n + rng.gauss(0, TOKEN_NOISE)), 0)
        out.append((n, tokens, Decimal(f"{price:.7f}")))
    return out


def _trial(seed: int, sampled: int, remaining: int, resamples: int) -> tuple[bool, bool]:
    """One synthetic pilot: (price interval covers the rest's true total, tokens interval does)."""
    rng = random.Random(seed)
    lengths = [rng.randint(50, 500) for _ in range(sampled + remaining)]  # prompt lengths vary 10x
    rows = _rows(rng, lengths)
    sample = [SampleRow(n, t, p) for n, t, p in rows[:sampled]]
    rest = rows[sampled:]
    est = project(
        sample, LengthTally.of(n for n, _, _ in rest), confidence=0.9, seed=seed, resamples=resamples
    )
    price = sum((p for _, _, p in rest), Decimal(0))
    tokens = sum(t for _, t, _ in rest)
    return est.low <= price <= est.high, est.tokens_low <= tokens <= est.tokens_high


@pytest.mark.parametrize(
    ("remaining", "trials"),
    [
        (10, 200),  # few rows left: per-row noise dominates (a line-only bootstrap covers ~45 %)
        (EXACT_NOISE_ROWS, 100),  # the last size with one resampled residual per row
        (1950, 150),  # the case: the line's uncertainty dominates, noise by its normal sum
    ],
)
def test_90_percent_interval_covers_about_90_percent(remaining: int, trials: int) -> None:
    hits = [_trial(seed, 50, remaining, resamples=300) for seed in range(trials)]
    price_cover = sum(p for p, _ in hits) / trials
    token_cover = sum(t for _, t in hits) / trials
    print(
        f"\nremaining={remaining}: coverage price {price_cover:.1%}, tokens {token_cover:.1%} "
        f"({trials} trials)"
    )
    # A 90 % bootstrap from 50 rows is a little optimistic; far off either way means a bug.
    assert 0.80 <= price_cover <= 0.98, price_cover
    assert 0.80 <= token_cover <= 0.98, token_cover


def test_exact_line_is_recovered_and_the_interval_is_tight() -> None:
    rng = random.Random(3)
    lengths = [rng.randint(50, 500) for _ in range(400)]
    rows = [SampleRow(n, 10 + n // 4, Decimal(20 + 2 * n) * Decimal("0.0000001")) for n in lengths]
    sample, rest = rows[:40], rows[40:]
    est = project(sample, LengthTally.of(r.length for r in rest), seed=1)
    truth = sum((r.price for r in rest), Decimal(0))
    assert est.model == MODEL_OLS
    assert est.projected_price == truth
    assert est.low <= truth <= est.high and est.high - est.low <= Decimal("0.0000010")
    assert est.price_fit.slope == pytest.approx(2e-7) and est.price_fit.intercept == pytest.approx(2e-6)


def test_money_is_decimal_exact_at_the_edges_and_rounded_outwards() -> None:
    rng = random.Random(5)
    rows = _rows(rng, [rng.randint(50, 500) for _ in range(30)])
    sample = [SampleRow(n, t, p) for n, t, p in rows]
    est = project(sample, LengthTally.of([100, 200, 300]), seed=2, resamples=500)
    assert est.sample_price == sum((p for _, _, p in rows), Decimal(0))
    assert est.sample_tokens == sum(t for _, t, _ in rows)
    assert est.projected_total_price == est.sample_price + est.projected_price
    for value in (est.projected_price, est.low, est.high):
        assert isinstance(value, Decimal) and value.as_tuple().exponent == -7  # the prices' precision
    assert est.low <= est.projected_price <= est.high
    assert est.tokens_low <= est.projected_tokens <= est.tokens_high
    data = est.to_dict()
    assert data["projected_price"] == format(est.projected_price, "f") and "E" not in data["low"]
    assert data["sample_chars"] == [min(n for n, _, _ in rows), max(n for n, _, _ in rows)]


def test_same_seed_same_numbers_other_seed_other_draws() -> None:
    rng = random.Random(8)
    sample = [SampleRow(n, t, p) for n, t, p in _rows(rng, [rng.randint(50, 500) for _ in range(50)])]
    rest = LengthTally.of(rng.randint(50, 500) for _ in range(300))
    one, two = project(sample, rest, seed=11), project(sample, rest, seed=11)
    other = project(sample, rest, seed=12)
    assert one == two
    assert one.projected_price == other.projected_price  # the point estimate does not depend on the seed
    assert (one.low, one.high) != (other.low, other.high)


@pytest.mark.parametrize(
    "lengths",
    [[120, 340], [200, 200, 200, 200]],  # too few rows for a slope; one length only
)
def test_no_slope_falls_back_to_the_mean_with_a_bootstrap_of_the_mean(lengths: list[int]) -> None:
    prices = [Decimal("0.0001"), Decimal("0.0003"), Decimal("0.0002"), Decimal("0.0002")]
    sample = [SampleRow(n, 100 + i, prices[i]) for i, n in enumerate(lengths)]
    est = project(sample, LengthTally.of([150] * 100), seed=4, resamples=500)
    mean = sum((r.price for r in sample), Decimal(0)) / len(sample)
    assert est.model == MODEL_MEAN and est.price_fit.slope == 0.0
    assert est.projected_price == (mean * 100).quantize(Decimal("0.0001"))
    assert est.low < est.projected_price < est.high  # the sample's spread shows in the interval


def test_one_row_projects_its_cost_with_no_spread_to_show() -> None:
    est = project([SampleRow(100, 50, Decimal("0.0002"))], LengthTally.of([100, 300]), seed=0)
    assert est.model == MODEL_MEAN
    assert est.projected_price == est.low == est.high == Decimal("0.0004")
    assert est.projected_tokens == 100


def test_nothing_pending_projects_zero_without_needing_a_sample() -> None:
    est = project([], LengthTally(), seed=0)
    assert est.model == MODEL_NONE and est.pending == 0 and est.sampled == 0
    assert est.projected_price == est.low == est.high == 0 and est.projected_tokens == 0
    done = project([SampleRow(100, 50, Decimal("0.0002"))], LengthTally(), seed=0)
    assert done.model == MODEL_NONE and done.projected_total_price == Decimal("0.0002")


def test_no_sample_or_only_failures_cannot_be_projected() -> None:
    with pytest.raises(EstimateError, match="nothing was sampled"):
        project([], LengthTally.of([10, 20]))
    failed = [SampleRow(100, 0, Decimal(0), succeeded=False) for _ in range(5)]
    with pytest.raises(EstimateError, match="all 5 sampled row"):
        project(failed, LengthTally.of([10, 20]))
    # A failure among answered rows is part of what the rest will cost (a failed call bills nothing).
    mixed = [*failed[:1], *(SampleRow(100 + 10 * i, 50, Decimal("0.0002")) for i in range(5))]
    assert project(mixed, LengthTally.of([100] * 6), seed=0).projected_price < Decimal("0.0012")


@pytest.mark.parametrize(("confidence", "resamples"), [(0, 2000), (1, 2000), (0.9, 10), (True, 2000)])
def test_bad_settings_are_refused(confidence: float, resamples: int) -> None:
    with pytest.raises(ValueError, match="confidence|resamples"):
        project(
            [SampleRow(1, 1, Decimal(1))], LengthTally.of([1]), confidence=confidence, resamples=resamples
        )


def test_length_tally_streams_and_removes_the_sample() -> None:
    tally = LengthTally.of([50, 500, 120])
    assert (tally.count, tally.total, tally.shortest, tally.longest) == (3, 670, 50, 500)
    rest = tally.without([500])
    assert (rest.count, rest.total) == (2, 170)
    with pytest.raises(ValueError):
        rest.without([1, 2, 3])


def test_price_cap_is_the_exact_product() -> None:
    assert price_cap("0.1234567", 1.2) == "0.14814804"
    assert price_cap(Decimal("2"), "1.5") == "3.0"
    assert price_cap("0.0000000", 1.2) == "0.00000000"
    for high, margin in (("-1", 1), ("1", 0), ("x", 1)):
        with pytest.raises(ValueError):
            price_cap(high, margin)


def test_reservoir_keeps_a_uniform_sample() -> None:
    kept = [0] * 20
    for seed in range(4000):
        reservoir = Reservoir(5, random.Random(seed))
        for item in range(20):
            reservoir.offer(item)
        assert len(reservoir.items) == 5 and len(set(reservoir.items)) == 5
        for item in reservoir.items:
            kept[item] += 1
    # Each item is kept with probability 5/20: 1000 of 4000, sd ~27.
    assert all(880 <= k <= 1120 for k in kept), kept
