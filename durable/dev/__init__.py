"""Local development only: the dev registry through which separately started `wrangler dev`
sessions (and `wrangler tail`) find each other (`registry`), and local stand-ins for outside
services shared by the processes of one dev state (`local_servers`)."""
