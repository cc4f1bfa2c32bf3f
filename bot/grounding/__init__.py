"""Grounding: the question's evidence, the support checks, citations and translation."""
