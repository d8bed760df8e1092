"""pytest plugin (work in progress)."""
