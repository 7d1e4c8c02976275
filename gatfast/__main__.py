import sys

from gatfast.cli import main

sys.exit(main())
