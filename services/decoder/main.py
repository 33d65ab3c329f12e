"""``ocrstream serve decoder`` / ``python -m ocrstream.services.decoder.main``."""

import sys

from ocrstream.services.serve import serve


def main() -> int:
    return serve("decoder")


if __name__ == "__main__":
    sys.exit(main())
