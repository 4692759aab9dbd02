"""The fetch worker, ``python -m vllmd.fetch``: the weights a launch needs, into the model cache.

A program of its own, run by :class:`vllmd.process.fetcher.Fetcher` in its own process group:
huggingface_hub, its HTTP client and hf-xet never load into the daemon, and a cancelled fetch is
a killed process. Nothing in the package imports it.
"""
