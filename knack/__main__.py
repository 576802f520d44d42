import sys

from knack.cli import main

sys.exit(main())
