# vllmd task recipes. `just --list` shows them.

venv := ".venv"
python := venv / "bin/python"

# Create the virtual environment with vllmd and the test tools.
setup:
    python3 -m venv {{venv}}
    {{venv}}/bin/pip install -q -e '.[test]'

# The whole test suite, end-to-end tier included (what CI runs).
test: setup
    {{venv}}/bin/pytest

# The fast tier only: no real vLLM, no container runtime, no node; in parallel processes.
test-fast: setup
    {{venv}}/bin/pytest -m "not e2e and not container and not startos" -n 4 --dist loadfile

# Lint, format check and strict types.
lint: setup
    {{venv}}/bin/ruff check .
    {{venv}}/bin/ruff format --check .
    {{venv}}/bin/mypy

# Run the daemon on local folders under ./.vllmd (no model until Set Model).
run *ARGS: setup
    {{python}} -m vllmd run --data .vllmd/data --public .vllmd/public --run-dir .vllmd/run --no-ldconfig {{ARGS}}

# A real small chat model on this machine's CPU.
demo: setup
    {{python}} -m vllmd demo

# The benchmark: how fast vllmd reacts, against the floor.
bench *ARGS: setup
    {{python}} -m bench {{ARGS}}

# Build one image with podman or docker, whichever is present: just image nvidia|rocm|cpu
image VARIANT *FLAGS:
    containers/build.sh {{VARIANT}} {{FLAGS}}

# Write the CPU vLLM's lock again (vllmd/demo/cpu-vllm.lock.txt) for containers/versions.env's vLLM.
relock: setup
    {{python}} -m vllmd.demo.lock .
