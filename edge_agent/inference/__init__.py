"""Inference: the interpreter and Edge TPU delegate, input sources, pre- and post-processing, the frame loop.

Depends on nothing else in the agent but its errors; publishing and updating build on it.
"""
