"""vllmd's benchmark: how fast the real ``vllmd run`` reacts and what it costs idle, each figure
guarded against today's (``baseline.json``: none may get more than 1.5x worse), next to the floor
of the same work measured in the same run.

Run it as ``python -m bench`` (``--quick`` for the smoke test); see ``bench/README.md``.
"""
