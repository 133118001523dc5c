"""The pipeline's five stages, one script each: `python -m stages.<name>`.

Importing the package first pins what decides the bits, before NumPy loads
(harness/pins.py), so every stage computes the same bytes on every x86-64 machine
with AVX2.
"""

from harness import pins, signals

pins.apply()
signals.early()  # a stop during the imports is kept for run() to honour
