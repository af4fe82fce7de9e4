"""One feature pipeline for training replay and online scoring (see pipeline.py)."""
