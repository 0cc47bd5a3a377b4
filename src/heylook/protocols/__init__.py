"""Pure translation between wire formats and the internal types: no HTTP, no Starlette."""
