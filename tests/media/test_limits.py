import dataclasses

import pytest
from perceiver_serve.media import MediaLimits


def test_defaults_admit_a_large_photo_and_minutes_of_audio():
    limits = MediaLimits()
    assert limits.max_image_pixels >= 7_000 * 5_000
    assert limits.max_image_bytes >= 10 * 1024 * 1024
    assert limits.min_image_side == 1
    assert limits.max_audio_seconds >= 60


def test_limits_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MediaLimits().max_image_pixels = 1  # type: ignore[misc]


@pytest.mark.parametrize("name", [field.name for field in dataclasses.fields(MediaLimits)])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_limits_are_a_configuration_error(name, value):
    with pytest.raises(ValueError, match=name):
        MediaLimits(**{name: value})
