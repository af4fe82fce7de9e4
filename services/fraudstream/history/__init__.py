"""History: the archive of every topic as Parquet, the queries on it, and the backtester.

The archive's layout is an interface (the trainer, the backtester and the review console
read it); `layout.py` defines it.
"""
