"""``ocrstream serve rasterizer`` / ``python -m ocrstream.services.rasterizer.main``."""

import sys

from ocrstream.services.serve import serve


def main() -> int:
    return serve("rasterizer")


if __name__ == "__main__":
    sys.exit(main())
