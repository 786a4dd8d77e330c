"""Apps' data directories as one live tree per app, shared by the roles of a host."""
