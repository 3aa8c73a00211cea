"""A typed client for perceiver-serve, and the ``perceiver-client`` command.

Install with ``pip install perceiver-serve[client]``: it needs neither torch nor FastAPI.
Answers are the server's own models (:mod:`perceiver_serve.answers`); every failure is a
:class:`PerceiverError`.
"""

from ..answers import ClassificationResponse, FillMaskResponse, Health, ModelInfo, ModelList, Prediction
from .client import AsyncClient, Client
from .connection import Connection
from .errors import InputError, PerceiverError
from .files import Reconstruction
from .video import ReconstructedWindow, StreamStarted, VideoChunk, VideoGeometry, VideoPiece, WindowLabels

__all__ = [
    "AsyncClient", "ClassificationResponse", "Client", "Connection", "FillMaskResponse", "Health", "InputError",
    "ModelInfo", "ModelList", "PerceiverError", "Prediction", "Reconstruction", "ReconstructedWindow",
    "StreamStarted", "VideoChunk", "VideoGeometry", "VideoPiece", "WindowLabels",
]
