"""Capturing frames for retraining: which are kept (sink), how they lie on disk (archive), and how
a signed ``collect`` command uploads them to the release store (collect). Settings: ``[capture]``."""
