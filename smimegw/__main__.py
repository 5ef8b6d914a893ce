import sys

from smimegw.cli import main

sys.exit(main())
