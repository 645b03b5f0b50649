"""The `wrangler` command line: `dev`, `tail`, `secret`, for workers run by the `durable` runtime."""
