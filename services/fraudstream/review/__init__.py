"""The review service: the case store and queue, verdicts back as labels, the console.

`fraud.review` cases land in a database (SQLite by default, PostgreSQL by URL); reviewers
claim and decide them in the console (`web/`); each fraud or legitimate verdict becomes
exactly one record on `fraud.labels` through the outbox (`outbox.py`).
"""
