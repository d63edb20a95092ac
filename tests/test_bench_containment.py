"""``bench.containment`` runs on both containment paths and records figures (one trial each)."""

from __future__ import annotations

import pytest

from bench.containment import MODES, markdown, measure

pytestmark = pytest.mark.e2e


def test_one_trial_per_path_leaves_nothing_and_records_figures() -> None:
    data = measure(1)
    assert set(data["summary"]) == set(MODES) == {"linux-native", "portable"}
    for mode in MODES:
        for kind in ("cancel", "sigkill"):
            row = data["summary"][mode][kind]
            assert row["errors"] == [], (mode, kind, row)
            assert row["capped"] == 0, (mode, kind, row)
            assert row["median_s"] > 0
    table = markdown(data["summary"])
    assert "| linux-native |" in table
    assert "| portable |" in table
