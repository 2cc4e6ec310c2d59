"""Scenarios of the real-kernel guest: every scenarios/test_*.py is loaded, in name order."""
