"""Publishing: the MQTT client, the durable outbox, stats and Home Assistant discovery.

Builds on :mod:`edge_agent.inference` (it publishes its results); knows nothing of updates.
"""
