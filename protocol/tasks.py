"""The task a request states: ``x-medic-task: transform|grounded_qa|open``, which wins over the model's ``task``.

The fidelity judge scores a summary against its source, an answer against its context and an open answer
on its own; told the task, it does not have to guess it. The header is for the gateway alone: it is
checked before anything is forwarded, and never forwarded (upstreams/http.py leaves it out).
"""

from __future__ import annotations

from typing import Literal, get_args

from protocol.errors import InvalidRequest

Task = Literal["transform", "grounded_qa", "open"]  # what a request asks the model to do
TASK_HEADER = "x-medic-task"
RAW_TASK_HEADER = TASK_HEADER.encode()  # as an ASGI server hands header names over: lower-case bytes
TASKS: dict[str, Task] = {task: task for task in get_args(Task)}


def stated(value: str | None) -> Task | None:
    """The task a header value names, in any case; None when the header is absent.

    A value that names no task is refused rather than ignored: the client meant to state something, and a
    silent None would let the judge infer a task the client has just said is something else.
    """
    if value is None:
        return None
    task = TASKS.get(value.lower())
    if task is None:
        raise InvalidRequest(
            f"The {TASK_HEADER} header must be one of: {', '.join(TASKS)}.", param=TASK_HEADER, code="invalid_task"
        )
    return task
