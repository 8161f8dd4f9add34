"""``python -m fx_operator`` is ``fxctl``."""

from fx_operator.cli.main import main

main()
