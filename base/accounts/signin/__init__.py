"""Sign-in with OpenID Connect providers (Google, Microsoft, Apple)."""
