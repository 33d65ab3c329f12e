"""``ocrstream serve assembler`` / ``python -m ocrstream.services.assembler.main``."""

import sys

from ocrstream.services.serve import serve


def main() -> int:
    return serve("assembler")


if __name__ == "__main__":
    sys.exit(main())
