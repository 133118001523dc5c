"""params.yaml: the rules of every key, and the strict reader.

schema.py     every section's keys and their rules; load() checks the sections a stage reads
yaml_file.py  reads the file as DVC reads it (UTF-8, YAML 1.2), strictly

    from params import load
    train = load("model", "train")["train"]
"""

from params.schema import ACCESSED, SCHEMA, ParamsError, Section, load, validate

__all__ = ["ACCESSED", "SCHEMA", "ParamsError", "Section", "load", "validate"]
