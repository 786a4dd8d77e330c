"""State database: tables, Alembic migrations, leases with fencing tokens."""
