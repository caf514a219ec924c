"""The engine's shared types: `SamplingSettings` (validated once for both samplers) and the request check."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from ttsd.engine.types import SamplingSettings, check_sample_request


def test_defaults_and_valid_settings():
    assert SamplingSettings() == SamplingSettings(temperature=1.0, top_p=1.0, max_tokens=1024, seed=None)
    greedy = SamplingSettings(temperature=0, top_p=0.5, max_tokens=1, seed=-3)
    assert (greedy.temperature, greedy.top_p, greedy.max_tokens, greedy.seed) == (0, 0.5, 1, -3)


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("temperature", -0.1, "greater than or equal to 0"),
        ("temperature", math.nan, "finite number"),
        ("temperature", math.inf, "finite number"),
        ("top_p", 0.0, "greater than 0"),
        ("top_p", 1.5, "less than or equal to 1"),
        ("max_tokens", 0, "greater than or equal to 1"),
        ("max_tokens", 2.5, "valid integer"),
        ("seed", "seven", "valid integer"),
        ("top_k", 5, "Extra inputs are not permitted"),  # no sampler takes top_k: refused, not ignored
    ],
)
def test_bad_settings_are_refused_with_the_field_and_the_rule(field, value, says):
    with pytest.raises(ValidationError) as error:
        SamplingSettings(**{field: value})
    message = str(error.value)
    assert field in message and says in message


def test_settings_are_frozen():
    settings = SamplingSettings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.max_tokens = 5


def test_sample_request_needs_a_count_and_non_empty_prompts():
    check_sample_request([[1, 2], [3]], 1)
    check_sample_request([], 4)
    with pytest.raises(ValueError, match=r"n \(samples per prompt\) must be at least 1, got 0"):
        check_sample_request([[1]], 0)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        check_sample_request([[1], [], [2]], 2)
