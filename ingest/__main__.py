"""``python -m ingest ...`` = ``vinsight ...`` with the ingest commands (how ``ingest run`` starts workers)."""

import sys

from vinsight.cli import main

sys.exit(main(sys.argv[1:]))
