import sys

from nbinit.cli import main

sys.exit(main())
