"""Seeing the networks: counts, summaries, diagrams, receptive fields, the evolution atlas.

``summary(model)`` is the Keras-style table; ``cnnzoo.inspect.draw``, ``receptive_field``,
``explain`` and ``atlas`` hold the rest, each behind a ``cnnzoo`` command.
"""
from .summary import summary

__all__ = ["summary"]
