"""remote: check that a DVC remote can be used, in one line - `python -m remote [NAME]`."""
