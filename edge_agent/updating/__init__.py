"""Updating: installed releases, sandboxed validation, the rollout command worker, the hot swap.

Builds on :mod:`release_contract` (manifest, signatures, commands, fetch) and on the
inference and publishing packages through small protocols.
"""
