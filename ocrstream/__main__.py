import sys

from ocrstream.cli import main

sys.exit(main())
