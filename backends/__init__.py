"""autospec.backends: what runs the speculative steps.

`simulated` (numpy only) is imported here; the HuggingFace backend (`autospec.backends.hf`) is
imported on first use so that `import autospec` never pulls in torch or transformers.
"""
from .simulated import AcceptanceSpec, Request, SimulatedBackend, Workload

__all__ = ["AcceptanceSpec", "Request", "SimulatedBackend", "Workload"]
