"""The database: models, Alembic migrations, sessions (`session.py`), the small queries the API and the worker share (`queries.py`), and API tokens (`tokens.py`)."""
