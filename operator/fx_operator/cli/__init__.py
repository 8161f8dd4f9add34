"""``fxctl``: the command line for the store, local runs and (with the operator extra) clusters."""
