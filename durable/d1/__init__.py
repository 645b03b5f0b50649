"""D1 (`d1_databases` in the config): Cloudflare's SQL database binding, one SQLite file per
database under the state directory (database.py: the Worker API; engine.py: the file and its
thread; migrations.py: `wrangler d1 migrations`). ARCHITECTURE.md, D1 databases."""
from .database import D1Database, D1Error, D1PreparedStatement

__all__ = ["D1Database", "D1Error", "D1PreparedStatement"]
