"""Fault injection: a crowd buys while something breaks, then the database is checked.

``python -m tests.faults`` runs every scenario at full size and prints the
table (``make faults``); ``tests/faults/test_faults.py`` runs a short version
of each under the ``faults`` marker.
"""
