"""Each summary line against its published anchor (VISION rule 9): matched by metric, hardware and
configuration in `hpcbench.models.anchors`, or nothing at all.

Verdicts:
  ok            within the tolerance of the anchor (or better)
  below anchor  a higher-is-better metric under anchor x (1 - tolerance)
  above anchor  a lower-is-better metric over anchor x (1 + tolerance)
  no anchor     no published figure matches this hardware and configuration (never a guess); always
                on the CPU fallback, whose numbers are never held against GPU figures (rule 6)
  skipped / failed  the line has no value: its source did not run, or failed its check
"""

from __future__ import annotations

from dataclasses import dataclass

OK, BELOW, ABOVE, NO_ANCHOR, SKIPPED, FAILED = "ok", "below anchor", "above anchor", "no anchor", "skipped", "failed"


@dataclass(frozen=True)
class Judged:
    """What a summary row shows about its anchor."""

    verdict: str
    pct_of_anchor: float | None = None
    anchor_value: float | None = None
    anchor_unit: str | None = None
    anchor_hardware: str | None = None
    anchor_source: str | None = None
    anchor_note: str | None = None

    def columns(self) -> dict:
        return {"anchor_value": self.anchor_value, "anchor_unit": self.anchor_unit,
                "anchor_hardware": self.anchor_hardware, "anchor_source": self.anchor_source,
                "anchor_note": self.anchor_note, "pct_of_anchor": self.pct_of_anchor, "verdict": self.verdict}


def verdict(pct_of_anchor: float | None, tolerance_pct: float, higher_is_better: bool = True) -> str:
    """ok, or below/above the anchor by more than the tolerance; `no anchor` without a percentage."""
    if pct_of_anchor is None:
        return NO_ANCHOR
    if higher_is_better:
        return OK if pct_of_anchor >= 100 - tolerance_pct else BELOW
    return OK if pct_of_anchor <= 100 + tolerance_pct else ABOVE


def judge(metric: str, value: float | None, device_name: str | None, fallback: bool, config: dict,
          tolerance_pct: float, higher_is_better: bool = True) -> Judged:
    """The anchor columns and verdict of one measured value (None: nothing to judge)."""
    if value is None:
        return Judged(SKIPPED)
    if fallback:
        return Judged(NO_ANCHOR, anchor_note="CPU fallback: never compared with GPU figures")
    from hpcbench.models import anchors

    anchor = anchors.match(metric, device_name, **config)
    if anchor is None:
        return Judged(NO_ANCHOR)
    pct = anchors.pct_of_anchor(value, anchor)
    found = {"anchor_value": anchor.value, "anchor_unit": anchor.unit, "anchor_hardware": anchor.hardware,
             "anchor_source": anchor.source, "anchor_note": anchor.note}
    if pct is None:  # matched, but not comparable (e.g. another unit): shown, not judged
        return Judged(NO_ANCHOR, **found)
    return Judged(verdict(pct, tolerance_pct, higher_is_better), pct_of_anchor=pct, **found)
