"""``ocrstream serve encoder`` / ``python -m ocrstream.services.encoder.main``."""

import sys

from ocrstream.services.serve import serve


def main() -> int:
    return serve("encoder")


if __name__ == "__main__":
    sys.exit(main())
