"""`python -m segops_cli`, the same as the `segops` command."""

from segops_cli.main import main

main()
