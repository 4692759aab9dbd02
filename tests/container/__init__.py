"""The container tier: vllmd's images built and run under a real container runtime."""
