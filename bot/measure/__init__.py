"""Measuring: the grounding eval, its curve, the speed bench."""
