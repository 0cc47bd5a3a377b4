"""Wire types declared once: every route's request and response bodies as pydantic models, from
which requests are validated and the OpenAPI document is made."""
