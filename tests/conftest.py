"""Shared pytest setup: one fixed, small hypothesis profile for every property-based test.

``derandomize`` makes every run draw the same examples (a failure in CI reproduces locally);
``deadline=None`` because torch's first call of an operator can take a while. Set
``HYPOTHESIS_PROFILE=thorough`` to search ten times as long when changing a boundary check.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
