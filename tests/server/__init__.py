"""Tests of the process-level pieces: CLI, settings, allocator."""
