"""Signed model releases, their stores, and rollouts over MQTT.

The device-side modules (:mod:`registry.manifest`, :mod:`registry.signing`,
:mod:`registry.pull`, :mod:`registry.protocol`) need only the base install;
the OCI store imports ``oras`` lazily and the rollout controller is for the
operator's machine.
"""
