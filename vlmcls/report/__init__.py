"""Reporting, one package: case rows (`rows`), stored runs read back (`runs`), statistics (`stats`),
markdown (`markdown`, `compare`), plots (`plots`) and the one writer of a run's files (`writer`).

Imports point one way: text <- rows <- markdown <- compare / plots <- writer; `runs` and `stats`
read stored files and know nothing of markdown. `from vlmcls import report` gives the names below.
"""
from __future__ import annotations

from .markdown import (AVERAGE_NOTES, CALIBRATION_NOTE, CONTEXT_KEYS, MACRO_NOTE, ORDER_NOTE, SMOKE_NOTE,
                       STUDY_COLUMNS, calibration_section, notes, order_section, parse_table, render_markdown,
                       study_table, model_tag, unreadable_section)
from .markdown import _duration, _share  # noqa: F401  (tests written before the package reach these)
from .rows import (ERROR_CHARS, INPUT_ERROR_PREFIXES, INPUT_ERRORS_LISTED, case_row, is_input_error,
                   order_fields, skipped_row, spec_fields)
from .runs import Run, RunError, load_run, load_samples
from .text import atomic_write, cell, prose
from .writer import clear_run_folder, finish_report, full_markdown, write_report, write_results, write_run, write_samples

_notes = notes  # the name the terminal summary used before the package (vlmcls.session)
