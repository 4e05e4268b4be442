"""Inference engines behind one small interface, the model registry and the tiny test model."""

from workers.engine import Engine, EngineRequest, create_engine

__all__ = ["Engine", "EngineRequest", "create_engine"]
