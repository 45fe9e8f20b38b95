"""One run: the stages intake -> store -> map -> deliver wired together over one journal (``_execution``), and
what one run leaves for the next (``_carryover``).

``Runtime`` (``shipmap.connectors._runtime``) builds one for each ``run``/``replay``; ``shipmap serve`` drives
one run after another through it."""
