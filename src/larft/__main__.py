import sys

from larft.cli import main

sys.exit(main())
