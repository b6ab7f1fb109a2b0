"""The reference: the same 5 functions as one plain script, no framework, no cache.

``python plain_script.py DATA [MAX_DEPTH]`` prints the metrics as one marked JSON line.
"""

from __future__ import annotations

import sys

import common


def main() -> None:
    data = sys.argv[1]
    max_depth = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    train, test = common.split(common.features(common.load(data)), 2)
    common.emit({"metrics": common.evaluate(common.train(train, max_depth), test)})


if __name__ == "__main__":
    main()
