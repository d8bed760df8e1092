"""Moved to `vlmcls.report.plots`: this name is that very module (so a test that patches
`vlmcls.plots.X` patches the real one), kept for the callers written before the move."""
import sys

from .report import plots as _plots

sys.modules[__name__] = _plots
