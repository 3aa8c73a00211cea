"""Errors raised by the model library."""


class CheckpointError(ValueError):
    """A checkpoint directory cannot be turned into a model; the message names the file and key."""
