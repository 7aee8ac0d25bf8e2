import sys

from digits.cli import main

# Guarded, so that a process that imports this module (a spawned worker does) does not run the CLI again.
if __name__ == "__main__":
    sys.exit(main())
