"""predict: classify your own images with the trained model - `python -m predict IMAGE ...`.

__main__.py  the command: its arguments, the model's answers, printed or as JSON
digits.py    a person's image file -> the model's input, made as its training images were

Importing the package first runs harness/start.py: the bits are pinned before NumPy loads
(harness/pins.py), so predict computes what the pipeline computes.
"""

import harness.start  # noqa: F401  (first: the bit pins, then stop signals recorded)
