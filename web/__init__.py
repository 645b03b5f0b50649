"""The HTTP glue the shop's services share (Quart): errors as the envelope, tokens and sign-in,
request helpers, the OpenAPI document's truth, health probes and service-to-service auth.
Services import `from web.x import y`; `web` imports no service. ARCHITECTURE.md, Folders."""
