"""remote: check that a DVC remote can be used, in one line - `python -m remote [NAME]`."""

import harness.start  # noqa: F401  (first: the bit pins, then stop signals recorded)
