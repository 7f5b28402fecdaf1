"""`python -m callassist.cli`: the `callassist` command."""

from callassist.cli import main

main()
