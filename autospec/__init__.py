"""autospec: speculative decoding that works with batching and tunes spec_len while it runs.

The loop (`run_loop`) asks a controller (`autospec.controllers`) for a spec_len each step, a
backend (`autospec.backends`) runs the step, the controller learns from the measured record.
`AutoSpec` wraps a HuggingFace target (+ draft) behind a `generate()` like the target's own; it
is imported lazily so that `import autospec` needs neither torch nor transformers.

The library never configures logging: it is disabled here; the CLI and examples enable it.
"""
from loguru import logger

from autospec.cost_model import CostModel, expected_tokens
from autospec.loop import run_loop
from autospec.profiles import Profile, ProfileError, load_profile, shipped_profiles
from autospec.runs import JsonlSink, MemorySink, RunWriter, StepLogReader, read_steps
from autospec.summary import summarize
from autospec.types import StepContext, StepRecord

logger.disable("autospec")

__version__ = "0.1.0"

__all__ = [
    "AutoSpec", "CostModel", "JsonlSink", "MemorySink", "Profile", "ProfileError", "RunWriter",
    "StepContext", "StepLogReader", "StepRecord", "expected_tokens", "load_profile", "read_steps",
    "run_loop", "shipped_profiles", "summarize",
]


def __getattr__(name: str):
    if name == "AutoSpec":
        from autospec.entrypoints.engine import AutoSpec
        return AutoSpec
    raise AttributeError(f"module 'autospec' has no attribute {name!r}")
