"""Alembic migrations of the Herald schema (run them with :mod:`herald.storage.migrate`).

A package so that ``env.py`` ships with the wheel; revisions live in ``versions/``.
"""
