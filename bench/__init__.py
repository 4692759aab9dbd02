"""vllmd's benchmark: how fast the real ``vllmd run`` reacts, and what it costs idle, next to the
floor (the least possible work for the same events) measured seconds earlier in the same run.

Run it as ``python -m bench`` (``--quick`` for the smoke test); see ``bench/README.md``.
"""
