"""``pargs-batch compare``: what runs (``config``), running and evaluating them (``run``), the tables and
plots (``tables``)."""
