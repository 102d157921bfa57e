"""The `ray job submit` entry points and the GPU check: scripts run from a checkout (``python jobs/x.py``),
importable as a package for their tests."""
