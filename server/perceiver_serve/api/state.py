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
        models = []
        for name, served in registry.models.items():
            versions = registry.versions.get(name, {})
            models.append({**served.describe(), "versions": [
                {"version": v, "state": copy.state, **({"reason": copy.reason} if copy.reason else {})}
                for v, copy in sorted(versions.items(), key=lambda item: int(item[0]))]})
        return {"models": models, "defaults": registry.defaults}
