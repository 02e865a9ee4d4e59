"""``python -m herald.cli``."""

from herald.cli.main import main

main()
