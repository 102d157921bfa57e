"""`python -m pargs_batch` is `pargs-batch`."""

import sys

from pargs_batch.cli import main

if __name__ == "__main__":
    sys.exit(main())
