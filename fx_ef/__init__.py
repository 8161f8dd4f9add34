"""The runtime a package script imports: ``from fx_ef import context``."""
