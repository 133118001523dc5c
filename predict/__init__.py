"""predict: classify your own images with the trained model - `python -m predict IMAGE ...`.

__main__.py  the command: its arguments, the model's answers, printed or as JSON
digits.py    a person's image file -> the model's input, made as its training images were

Importing the package first pins what decides the bits, before NumPy loads (harness/pins.py),
so predict computes what the pipeline computes.
"""

from harness import pins, signals

pins.apply()
signals.early()  # a stop during the imports is kept for run() to honour
