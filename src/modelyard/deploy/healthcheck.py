"""``python -m modelyard.deploy.healthcheck``: the image's ``HEALTHCHECK``.

Exit 0 when ``GET /v2/health/ready`` on ``127.0.0.1:$PORT`` answers 200 (every model
loaded and warmed), 1 otherwise. The slim base image has no curl; this needs only the
standard library and starts in a few milliseconds (it imports nothing of modelyard's).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

__all__ = ["READY_PATH", "main"]

READY_PATH = "/v2/health/ready"


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8080')}{READY_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return 0 if answer.status == 200 else 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"not ready: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
