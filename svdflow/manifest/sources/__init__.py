"""Entries of `items:` that make many items: `glob:` (the files a pattern matches) and `table:` (the
rows of a CSV or JSON Lines file). Each module reads its source and hands resolve.py plain items
with enough position information to point problems at the file, line and column they came from.
"""
