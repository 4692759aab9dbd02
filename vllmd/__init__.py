"""vllmd: run the vLLM server as an appliance.

The daemon keeps the API key alive, keeps vLLM in step with ``store.json``, detects the hardware
to offer presets that fit, and publishes honest health. ``docs/interfaces.md`` gives the
interfaces.
"""

from __future__ import annotations

__version__ = "0.1.0"
