"""Benchmarks of events_celery; each module is a script (see its docstring for how to run it)."""
