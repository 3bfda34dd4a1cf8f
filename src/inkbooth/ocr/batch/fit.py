"""Whether the model fits the documents: pages and documents read with low confidence, flagged.

A page's statistic is the median of its lines' confidences (a record's ``confidence``: the mean
token log-probability of the line; a line without one, whose log-probability was not finite, counts
as the lowest). A page of at least ``min_lines`` lines is judged: it is flagged when that median is
below ``threshold``, that is (roughly) when half or more of its lines were read at a mean
log-probability under it. A document is flagged when most (more than half) of its judged pages are. A page of fewer
lines (a cover, a page number alone) is not judged: one odd line must not decide it.

The threshold is a property of the model, measured for the committed Latin reader (issue 19 item 6,
``RecognizeConfig`` defaults: INT8 export on CPU, beam 4) on pages it reads and pages it cannot:

* readable, 45 pages (646 lines) read at CER <= 3.5%: the 6 demo pages, 24 more pages in their font
  and 15 such pages degraded like scans (gray levels, blur, resampling, noise, skew, JPEG): page
  medians from -0.00922 (worst) to -0.00015, median -0.00044 (fp32: -0.00539 .. -0.00011);
* unreadable, 41 pages (1,559 lines): 12 Russian pages (DejaVu Sans/Serif, CER 0.91-1.09), 16 LaTeX
  pages of the evaluation PDFs (tests/evalset.tsv, CER 0.34-0.76), 12 English pages in six fonts it
  never trained on (DejaVu, Liberation; CER 0.03-0.44) and one page degraded past reading (CER 1.17):
  page medians from -0.608 to -0.0290 (best), median -0.275 (fp32: best -0.0382).

``FIT_THRESHOLD`` = -0.016 is near the geometric mean of the two closest pages (-0.0164): it flags
none of the readable pages and all of the unreadable ones, with a factor 1.7 to spare below the worst
readable page and 1.8 above the best unreadable one (INT8; fp32: 3.0 and 2.4). Put as shares: at most
a third of a readable page's lines fall below it, at least 58% of an unreadable page's. Another model
needs its own threshold (``FitConfig.threshold``): confidences are on the model's own scale, so the
report records the model's hash beside the threshold.

Imports only the config helpers.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable
from typing import Any

from inkbooth.config import option

FIT_THRESHOLD = -0.016  # a page whose median line confidence is below this is flagged (measured above)
FIT_MIN_LINES = 3  # fewer lines on a page: not judged
STATISTIC = "median line confidence (mean token log-probability per line) of a page"


@dataclasses.dataclass
class FitConfig:
    """When pages and documents are flagged as read with low confidence (the model may not fit them)."""

    threshold: float = option(FIT_THRESHOLD, "a page whose median line confidence (mean token log-prob) is below "
                                             "this is flagged; measured for the committed Latin reader (see "
                                             "inkbooth.ocr.batch.fit); another model needs its own", max=0.0)
    min_lines: int = option(FIT_MIN_LINES, "pages with fewer lines are not judged", min=1, max=1_000_000)

    def validate(self) -> None:
        from inkbooth.config import check_ranges

        check_ranges(self, "fit")


def page_confidence(confidences: Iterable[float | None]) -> float | None:
    """The page's statistic: the median of its line confidences (None counts as -inf); None without lines."""
    values = [c if isinstance(c, (int, float)) and math.isfinite(c) else -math.inf for c in confidences]
    return statistics.median(values) if values else None


def _rounded(value: float | None) -> float | None:
    return round(value, 5) if value is not None and math.isfinite(value) else None


class DocumentFit:
    """A document's pages as they stream by (``add_page``), judged against a ``FitConfig``."""

    def __init__(self, config: FitConfig | None = None) -> None:
        self.config = config or FitConfig()
        self.pages: dict[int, float] = {}  # judged page -> its median line confidence
        self.flagged_pages: list[int] = []

    def add_page(self, page: int, confidences: Iterable[float | None]) -> bool:
        """Judge one page's lines; whether it is flagged (False when it has too few lines to judge)."""
        values = list(confidences)
        if len(values) < self.config.min_lines:
            return False
        median = page_confidence(values)
        assert median is not None
        self.pages[page] = median
        flagged = median < self.config.threshold
        if flagged:
            self.flagged_pages.append(page)
        return flagged

    @property
    def judged(self) -> bool:
        return bool(self.pages)

    @property
    def flagged(self) -> bool:
        """Most of its judged pages are flagged."""
        return 2 * len(self.flagged_pages) > len(self.pages)

    @property
    def confidence(self) -> float | None:
        """The median of its judged pages' statistics."""
        return statistics.median(self.pages.values()) if self.pages else None

    def summary(self) -> dict[str, Any]:
        """What a result header and report.json say of the document."""
        return {"flagged": self.flagged, "pages_judged": len(self.pages), "pages_flagged": list(self.flagged_pages),
                "confidence": _rounded(self.confidence)}

    def header(self) -> dict[str, Any]:
        """The ``fit`` of a document's result header: the summary, the settings and each judged page's median."""
        return {**self.summary(), "threshold": self.config.threshold, "min_lines": self.config.min_lines,
                "page_confidence": {str(p): _rounded(m) for p, m in self.pages.items()}}


def page_groups(records: Iterable[dict[str, Any]]) -> Iterable[tuple[int | None, list[dict[str, Any]]]]:
    """Records in runs of one page: (page, its line records) in order; a note (a record with a
    ``status``) comes alone, as (None, [note])."""
    page: int | None = None
    run: list[dict[str, Any]] = []
    for record in records:
        if "status" in record:
            if run:
                yield page, run
                run = []
            yield None, [record]
            continue
        if run and record.get("page") != page:
            yield page, run
            run = []
        page = record.get("page")
        run.append(record)
    if run:
        yield page, run


def document_fit(records: Iterable[dict[str, Any]], config: FitConfig | None = None) -> DocumentFit:
    """The fit of a document from its records (lines of a page in a run, as a result holds them)."""
    fit = DocumentFit(config)
    for page, run in page_groups(records):
        if page is not None:
            fit.add_page(page, (r.get("confidence") for r in run))
    return fit
