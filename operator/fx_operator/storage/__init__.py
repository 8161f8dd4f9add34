"""The only code that talks to PostgreSQL, SQLite, the Kubernetes API or files holding keys;
errors converted here. It stores bytes: no cipher (the key ring, in services, has them)."""
