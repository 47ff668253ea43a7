"""The operator side of releases: stores (a local directory, an OCI registry), ``edge-registry``
and the rollout controller.

What devices share with it (manifest, signatures, commands and topics, verified fetch)
lives in :mod:`release_contract`; the OCI store speaks the distribution API with the standard library.
"""
