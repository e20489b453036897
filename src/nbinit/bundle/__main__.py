"""`python3 -m nbinit.bundle`: build the zipapp and the tree (see nbinit.bundle)."""

import sys

from nbinit.bundle import main

sys.exit(main())
