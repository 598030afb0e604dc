"""MindBot: a real-time voice assistant backend built on Pipecat."""

__version__ = "0.1.0"
