"""The only code that talks to PostgreSQL, SQLite or files holding keys; errors converted here."""
