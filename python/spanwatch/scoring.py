"""The coverage rule: how much of the input space a client has touched,
against what a client sampling like the whole population would touch with
the same number of queries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spanwatch.alerts import SEVERITIES, Evidence, Reason, utc
from spanwatch.config import ScoringSettings
from spanwatch.space import Space

__all__ = ["RULE", "CoverageScore", "FeatureRow", "evidence_of", "score_coverage"]

RULE = "coverage-v1"


@dataclass(frozen=True)
class FeatureRow:
    """One client's sketch features, by name."""

    values: dict[str, float]

    @classmethod
    def from_array(cls, names: list[str], row: npt.NDArray[np.float64]) -> FeatureRow:
        return cls(dict(zip(names, (float(v) for v in row), strict=True)))

    def __getitem__(self, name: str) -> float:
        return self.values[name]


@dataclass(frozen=True)
class CoverageScore:
    score: float
    ratios: dict[int, float]
    cells: dict[int, int]
    expected: dict[int, float]
    severity: str | None
    reasons: list[Reason]

    @property
    def severity_level(self) -> int:
        return 0 if self.severity is None else SEVERITIES.index(self.severity) + 1  # type: ignore[arg-type,unused-ignore]


def score_coverage(row: FeatureRow, space: Space, cfg: ScoringSettings) -> CoverageScore:
    """Observed / expected distinct cells, at the most telling level. A client
    that samples like the population scores about 1 at every level; one user
    with a few interests scores well below at the levels that population
    sampling would already have saturated.

    Only levels where population sampling would repeat cells count
    (expected distinct cells at most `informative_share` of the queries): at
    finer levels almost every query opens a new cell for anyone, so their
    ratio says nothing yet."""
    n = row["count"]
    expected = space.expected_cells(n) if n > 0 else np.zeros(len(space.levels))
    ratios, cells, exp = {}, {}, {}
    for level, e in zip(space.levels, expected, strict=True):
        c = row[f"cells_{level}"]
        cells[level] = int(c)
        exp[level] = float(e)
        ratios[level] = float(c / e) if e > 0 else 0.0
    telling = [lv for lv in space.levels if exp[lv] <= cfg.informative_share * n] or [
        space.levels[0]
    ]
    score = max(ratios[lv] for lv in telling) if n > 0 else 0.0
    severity = None
    reasons: list[Reason] = []
    if n >= cfg.min_queries and score >= cfg.coverage_threshold:
        low, high = cfg.severity_steps
        severity = "low" if score < low else "medium" if score < high else "high"
        reasons = [
            Reason(
                signal="coverage_ratio",
                value=round(score, 4),
                threshold=cfg.coverage_threshold,
                detail="distinct cells / cells expected of population sampling, best level",
            ),
            *(
                Reason(
                    signal=f"coverage_ratio_{level}",
                    value=round(ratios[level], 4),
                    threshold=cfg.coverage_threshold,
                    detail=f"{cells[level]} cells of {level}; population-like: {exp[level]:.1f}",
                )
                for level in telling
                if ratios[level] >= cfg.coverage_threshold
            ),
        ]
    return CoverageScore(score, ratios, cells, exp, severity, reasons)


def evidence_of(space: Space, f: FeatureRow) -> Evidence:
    """What an alert reports of a sketch (one client's, or a group's union):
    coverage and cells per level against population-like sampling."""
    n = f["count"]
    levels = space.levels
    expected = space.expected_cells(n) if n > 0 else np.zeros(len(levels))
    return Evidence(
        query_count=int(n),
        coverage={str(lv): round(f[f"coverage_{lv}"], 6) for lv in levels},
        cells={str(lv): int(f[f"cells_{lv}"]) for lv in levels},
        expected_cells={
            str(lv): round(float(e), 3) for lv, e in zip(levels, expected, strict=True)
        },
        near_duplicate_share=round(f["near_dup_share"], 4),
        distinct_prompts=round(f["distinct_prompts"], 1),
        first_seen=utc(f["first_ts"]),
        last_seen=utc(f["last_ts"]),
    )
