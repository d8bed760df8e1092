"""Moved to the `vlmcls.report` package (compare, runs, stats, writer): this name stays for the
callers and tests written before the move. New code imports from `vlmcls.report`."""
from __future__ import annotations

from .report.compare import *  # noqa: F401,F403
from .report.compare import METRIC_COLUMNS, baseline_section, study_section  # noqa: F401
from .report.runs import Run, RunError, load_run, load_samples  # noqa: F401
from .report.stats import ALPHA, Paired, mcnemar, pair, worse_than_baseline  # noqa: F401
from .report.writer import finish_report  # noqa: F401
