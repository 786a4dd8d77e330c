"""servicehost: PostgreSQL and Redis per app, and the apps' data directories."""
