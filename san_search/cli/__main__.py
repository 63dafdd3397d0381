"""`python -m san_search.cli`: the same command as the `san-search` console script."""

import sys

from san_search.cli import main

sys.exit(main())
