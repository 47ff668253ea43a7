"""The agent's errors.

Every error meant for a user derives from :class:`EdgeAgentError`; the CLI turns it
into one line on stderr and a non-zero exit. Third-party errors are translated
where they enter (``raise ... from exc``)::

    EdgeAgentError
    ├── ConfigError      bad option, config file or environment value
    ├── ModelError       missing, corrupt or unsuitable model / labels
    ├── DelegateError    the Edge TPU delegate cannot be loaded or the device is absent
    ├── InputError       unreadable image, video, camera or stream
    ├── PublishError     MQTT connection refused, bad URL, TLS or login failure
    └── UpdateError      a model update was refused or failed (see registry errors too)
"""


class EdgeAgentError(Exception):
    """Root of the agent's errors: a message a user can act on."""

    exit_code = 1


class ConfigError(EdgeAgentError):
    """An option, config file or environment value is invalid."""

    exit_code = 2


class ModelError(EdgeAgentError):
    """The model or labels file is missing, corrupt or not an image classifier."""


class DelegateError(EdgeAgentError):
    """The Edge TPU delegate could not be loaded, or no Edge TPU is present."""


class InputError(EdgeAgentError):
    """An input (image, video, camera, stream) cannot be read."""


class PublishError(EdgeAgentError):
    """Results cannot be published: bad broker URL, refused login, TLS failure."""


class UpdateError(EdgeAgentError):
    """A model update was refused or failed; the active model is unchanged."""
