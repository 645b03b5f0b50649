"""The `wrangler` command line: `dev`, `serve`, `tail`, `secret`, for workers run by the `durable` runtime."""
