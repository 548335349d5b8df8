"""Hypothesis settings for the property tests, chosen by $HYPOTHESIS_PROFILE:
'fast' (the default, `make test`) tries a few examples per property,
'thorough' (`make test-all`) many. Imported by every module with properties.

`examples(share)` scales a profile's count for a property whose examples are
dear (one that reads a tfds dataset per example runs a quarter as many).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILES = {"fast": 20, "thorough": 200}  # examples per property

for _name, _count in PROFILES.items():
  # No deadline: the machine is shared, so an example's wall time says nothing.
  # No database: a failure prints the example and the seed to rerun it with.
  # Derandomized: every run (and CI) tries the same examples, so a result can
  # be reproduced; widen the search by raising the count, not by luck.
  settings.register_profile(_name, max_examples=_count, deadline=None, database=None,
                            print_blob=True, derandomize=True,
                            suppress_health_check=[HealthCheck.too_slow])

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fast")
if PROFILE not in PROFILES:
  raise ValueError(f"HYPOTHESIS_PROFILE={PROFILE!r}: use one of {', '.join(PROFILES)}.")
settings.load_profile(PROFILE)


def examples(share: float = 1.0) -> settings:
  """The profile's settings with `share` of its examples (at least 5)."""
  return settings(max_examples=max(5, round(PROFILES[PROFILE] * share)))
