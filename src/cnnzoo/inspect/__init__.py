"""Seeing the networks: counts, summaries, diagrams, receptive fields, the evolution atlas."""
