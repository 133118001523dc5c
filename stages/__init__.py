"""The pipeline's stages, one script each: `python -m stages.<name>`.

Importing the package first pins what decides the bits, before NumPy loads
(stages/pins.py), so every stage and `stages.predict` compute the same bytes on
every x86-64 machine with AVX2.
"""

from stages import pins

pins.apply()
