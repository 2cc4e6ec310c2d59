"""The guest-side test library of tests/guest (python3 stdlib only; see tests/guest/README.md)."""
