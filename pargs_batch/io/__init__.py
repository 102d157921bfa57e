"""Rows in and out: prompt readers (``prompts``, ``ray_data``, ``contexts``), the containers and Arrow schema
that cross the worker boundary (``batch``), and the run directory written exactly once (``output``)."""
