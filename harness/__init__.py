"""The run harness: how every stage and command runs.

start.py    what a command's package does first: the bit pins, then stop signals recorded
command.py  the command line, logging, the one-line errors: `run(main)` ends every stage
errors.py   the expected failure (StageError) and how a failure reads
signals.py  stop signals, and stopping with the `dvc repro` that runs a stage
outputs.py  a failed or stopped stage puts back what dvc.lock records
files.py    the files the stages hand each other: paths, readers, checks
device.py   NumPy or CuPy for a stage's device key; the memory it may use
pins.py     what decides the bits, pinned before NumPy loads

pins.py imports no NumPy, so start.py can pin the bits before anything loads it.
"""
