"""Entry point for `ray job submit`: the generation job on whatever cluster runs it.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/generate.py --config jobs/configs/pargs.yaml [key=value ...]

Under `ray job submit`, RAY_ADDRESS points at the cluster, so the pool's actors land there.
"""

import sys

from pargs_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
