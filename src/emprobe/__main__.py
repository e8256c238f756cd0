"""`python -m emprobe` runs the command line."""

from emprobe.cli import main

main()
