"""``python -m swsrs`` runs the CLI."""

from swsrs.cli.main import main

if __name__ == "__main__":
    main()
