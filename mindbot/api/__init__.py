"""MindBot's REST API (``/api/v1``) and the protections around the whole server.

``mindbot.api.app.install_api`` mounts it on the voice server's FastAPI app: API keys with
scopes and a rate limit per key, request size limits, CORS, ``/readyz``, Twilio's request
signature and the WebRTC start tokens. Settings: ``mindbot.api.settings.ApiSettings``.

This package imports nothing on its own, so ``mindbot.config`` can import its settings.
"""
