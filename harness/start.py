"""What a command does first, as its package is imported, before anything else of it: pin what
decides the bits (harness/pins.py) while NumPy is not yet loaded, then record stop signals from
here on (harness/signals.py), so that a stop during the imports is honoured by run().

stages/, predict/ and remote/ import it from their __init__.py: `python -m stages.train` runs
it before stages/train.py's own imports.
"""

from harness import pins

pins.apply()  # before anything imports NumPy

from harness import signals  # noqa: E402

signals.early()
