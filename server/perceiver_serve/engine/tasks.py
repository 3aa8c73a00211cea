"""What the engine needs to know of a task, and nothing more.

The engine serves models for tasks it never imports: ``server.py`` hands it the task table
(through :meth:`ModelRepository.scan`), and each entry only has to look like this.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel


class BatchRunner(Protocol):
    """What a task tells the batcher: which payloads may share a batch, and how to run one."""

    def batch_key(self, payload: Any) -> Hashable: ...

    def run(self, payloads: Sequence[Any]) -> Sequence[Any]:
        """Results for ``payloads`` in order; a result may be a ``ServeError`` for that item alone."""


class ServableTask(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def architectures(self) -> tuple[str, ...]: ...

    @property
    def options(self) -> type[BaseModel]: ...

    @property
    def runner(self) -> Callable[[Any, Any], BatchRunner]: ...


TaskTable = Mapping[str, ServableTask]
