"""`python -m tqexport ...` is the same as the `tqexport` console script."""

import sys

from tqexport.cli.main import main

sys.exit(main())
