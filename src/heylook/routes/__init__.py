"""Starlette handlers: HTTP in, internal types to the core, wire bodies out."""
