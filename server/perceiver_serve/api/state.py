"""What every front end of one server shares: its models, metrics, media limits, drain flag."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..engine import ModelRegistry
from ..media.budget import DecodeBudget
from ..media.limits import DEFAULT_DECODE_BYTES, MediaLimits
from ..metrics import Metrics


@dataclasses.dataclass
class ServerState:
    registry: ModelRegistry
    metrics: Metrics
    limits: MediaLimits
    budget: DecodeBudget = dataclasses.field(default_factory=lambda: DecodeBudget(DEFAULT_DECODE_BYTES))
    draining: bool = False

    def models_json(self) -> dict[str, Any]:
        """Every model with its state: REST's ``/models`` and gRPC's ``ListModels`` answer."""
        registry = self.registry
        return {"models": [m.describe() for m in registry.models.values()], "defaults": registry.defaults}
