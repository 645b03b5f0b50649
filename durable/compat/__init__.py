"""Cloudflare's Python Workers API on this runtime: `workers` (and `js`) for code written for
Cloudflare, served by the same machinery as our own workers — one implementation, two spellings."""
