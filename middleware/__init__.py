"""Pure ASGI middleware for heylook; installed as heylook.middleware."""
