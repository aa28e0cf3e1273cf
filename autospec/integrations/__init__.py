"""autospec inside other serving engines (floor 3, beside `autospec.entrypoints`).

- `autospec.integrations.vllm_steps`: the engine-free half of the vLLM integration (its settings,
  the decisions and the feedback that turns vLLM's per-step outputs into `StepRecord`s); it imports
  no vLLM and is tested in autospec's own environment.
- `autospec.integrations.vllm`: the `Scheduler` / `AsyncScheduler` subclasses and the
  `vllm.general_plugins` hook; the only module of autospec that imports vLLM. autospec does not
  depend on vLLM: this module is imported by vLLM's processes, in an environment that has it.
"""
