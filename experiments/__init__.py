"""Experiments built on the library as a user would build them: the offline worlds, the demo and
the bench. Nothing in ``pargs_batch`` imports this package; its commands join `pargs-batch`
through the ``pargs_batch.commands`` entry points (``experiments.cli``)."""
