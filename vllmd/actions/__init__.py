"""The StartOS actions: ``get-api-key``, ``set-model``, ``delete-model-cache``.

Each action reads and writes the volumes' files directly (atomically) and prints a StartOS action
result; none talks to the daemon, which notices the files change by itself. They work whether or
not the daemon runs.
"""
