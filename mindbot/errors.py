"""MindBot's error tree: every error MindBot raises on purpose is a ``MindBotError``."""


class MindBotError(Exception):
    """Base class of MindBot's own errors."""


class ConfigError(MindBotError):
    """A setting is missing or invalid; the message names the variable to fix."""


class LocalLLMError(MindBotError):
    """The local llama.cpp server could not be started or stopped responding."""


class ProtocolError(MindBotError):
    """A peer sent a message that breaks its wire protocol (e.g. Twilio Media Streams)."""


class StorageError(MindBotError):
    """The database cannot be opened or used; the message names the file and the problem."""
