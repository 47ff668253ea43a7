"""The release contract shared by the three tools: manifest and signatures, rollout commands
and topics, verified fetch, durable files and the compile report's schema.

It imports none of ``compiler``, ``registry`` or ``edge_agent``; they all import it. The
device installs it without TensorFlow, docker or oras: standard library, ``cryptography``.
"""

#: The version of the whole toolkit (one source: pyproject.toml reads it from here).
__version__ = "0.2.0"
