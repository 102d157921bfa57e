"""Entry point for `ray job submit`: the evaluation job.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/evaluate.py --config jobs/configs/eval.yaml [key=value ...]
"""

import sys

from pargs_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
