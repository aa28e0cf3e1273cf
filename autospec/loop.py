"""The one loop of autospec: context -> choose -> step -> observe -> sinks.

Contract: `run_loop` drives any `Backend` with any `Controller` until the backend is done or
`max_steps` steps ran; it validates every chosen spec_len (ValueError naming it), stamps the
controller's name on each record, feeds it back to the controller, writes it to every sink (also
when the controller's `observe` raises: the step happened), and returns the records. With `scores_every` > 0 and a sink that has `write_scores`, it also writes the
controller's arm values every that many steps. `progress` shows a tqdm bar over steps.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

from tqdm.auto import tqdm

from autospec.protocols import Backend, Controller, Sink
from autospec.types import StepRecord, validate_spec_len


def run_loop(backend: Backend, controller: Controller, sinks: Iterable[Sink] = (), *,
             max_steps: int | None = None, keep_records: bool = True, progress: bool = False,
             scores_every: int = 0) -> list[StepRecord]:
    sinks = list(sinks)
    records: list[StepRecord] = []
    bar = tqdm(total=max_steps, desc=f"steps ({controller.name})", unit="step", disable=not progress)
    steps = 0
    while not backend.done() and (max_steps is None or steps < max_steps):
        record = run_step(backend, controller, sinks, scores_every)
        if keep_records:
            records.append(record)
        steps += 1
        bar.update(1)
    bar.close()
    return records


def run_step(backend: Backend, controller: Controller, sinks: list[Sink], scores_every: int = 0) -> StepRecord:
    """One turn of the loop; returns the record written to the sinks."""
    ctx = backend.context()
    spec_len = validate_spec_len(controller.choose(ctx), ctx.max_spec_len)
    record = dataclasses.replace(backend.step(spec_len), controller=controller.name)
    try:
        controller.observe(record)
    finally:                       # the step happened: its record is written even if the controller failed
        for sink in sinks:
            sink.write(record)
    if scores_every and ctx.step % scores_every == 0:
        for sink in sinks:
            if hasattr(sink, "write_scores"):
                sink.write_scores(ctx.step, ctx.batch_size, controller.scores(ctx))
    return record
