"""remote: check that a DVC remote can be used, in one line - `python -m remote [NAME]`."""

from harness import signals

signals.early()  # a stop during the imports (DVC's take a second) is kept for run() to honour
