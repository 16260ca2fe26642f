"""A target's text is its check: what the printed table says is what is tested."""

from __future__ import annotations

import pytest

from bench.targets import met


@pytest.mark.parametrize(
    ("target", "value", "expected"),
    [
        (">= 0.97", 0.97, True),
        (">= 0.97", 0.9699, False),
        ("<= 0.8", 0.8, True),
        ("<= 0.8", 1.103, False),
        ("< 0.8", 0.8, False),
        ("<= 101", 100, True),
        ("0", 0, True),
        ("0", 1, False),
        ("-", 5, None),
        (">= 1", None, None),
        (">= 1", "54.9 / 5", None),
    ],
)
def test_a_value_meets_the_target_its_text_states(target: str, value: object, expected: bool | None) -> None:
    assert met(target, value) is expected
