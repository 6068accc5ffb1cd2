"""`python -m gapcam` is the `gapcam` command."""

from gapcam.cli import main

if __name__ == "__main__":
    main()
