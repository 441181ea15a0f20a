"""The template's machinery, under your app: what keeps it correct under load, failures and
hostile clients. `cruft update` brings the template's later versions of these modules; your
code imports from them and rarely needs to change them.

- `database`: the engine (built on first use), `get_session()`, `get_read_session()`,
  `execute()` and `execute_read()` (one statement alone), `dispose()`; `connections`,
  `fair_pool`, `budget` and `urls` behind it: connection handling, the fair pool, the
  connection budget, database URLs.
- `migrations`: Alembic from async code, and the deploy step (`python -m <package>.core.migrations
  upgrade`).
- `logs`: one logging set-up, request ids, slow statements.
- With the web service: `web` (the session dependencies, error answers, the lifespan),
  `client_limits`, `observability` (access lines, metrics), `tracing`, and `serve`
  (`python -m <package>.core.serve`, the production server).
"""
