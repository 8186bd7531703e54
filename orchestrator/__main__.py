"""`python -m orchestrator`: the commands are in orchestrator/cli/."""

import os
import sys

from orchestrator.cli import main

if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # temporalio's native runtime was seen to segfault at interpreter exit after all work was done;
    # leave without interpreter teardown so the exit code is the command's own.
    os._exit(code)
