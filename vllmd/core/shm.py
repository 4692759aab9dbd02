"""Whether ``/dev/shm`` is large enough for vLLM, and what to tell a person when it is not.

vLLM (0.31 and later, CPU builds included) puts its engine's message queue in POSIX shared memory
and refuses to start with ``Insufficient space in /dev/shm`` when less than about 160 MiB is free.
Container runtimes give ``/dev/shm`` 64 MiB unless told otherwise (``--shm-size``). Pure: the
caller reads the size (:mod:`vllmd.hardware.shm`).
"""

from __future__ import annotations

MIB = 1 << 20
SHM_NEEDED_BYTES = 160 * MIB
"""The shared memory vLLM 0.32 asks for at start (its error names 160 MiB)."""
SHM_SUGGESTED = "4g"
"""The size upstream vLLM's CPU docs start the image with (``--shm-size=4g``)."""
SHM_ADVICE = (
    f"Start the container with a larger /dev/shm, for example --shm-size={SHM_SUGGESTED} "
    f"(docker run or podman run; shm_size: {SHM_SUGGESTED} in compose)."
)
"""What to do about a small ``/dev/shm``: the flag that sets its size."""


def shm_warning(size_bytes: int | None, free_bytes: int | None) -> str | None:
    """The warning for a ``/dev/shm`` of ``size_bytes`` with ``free_bytes`` free, or None if fine.

    None as a size means the folder could not be read: nothing is known, nothing is said.
    """
    if size_bytes is None:
        return None
    if size_bytes < SHM_NEEDED_BYTES:
        return (
            f"/dev/shm holds only {size_bytes // MIB} MiB; vLLM needs at least "
            f"{SHM_NEEDED_BYTES // MIB} MiB of shared memory and will fail to start with "
            f'"Insufficient space in /dev/shm". {SHM_ADVICE}'
        )
    if free_bytes is not None and free_bytes < SHM_NEEDED_BYTES:
        return (
            f"/dev/shm has only {free_bytes // MIB} MiB free of {size_bytes // MIB} MiB; vLLM "
            f"needs at least {SHM_NEEDED_BYTES // MIB} MiB and may fail to start with "
            f'"Insufficient space in /dev/shm". Free it, or {SHM_ADVICE[0].lower()}'
            f"{SHM_ADVICE[1:]}"
        )
    return None
