"""The plugin's executable. eKuiper starts it as ``<pythonBin> -u main.py '{"sendTimeout":1000}'`` with the plugin
folder as working directory; ``install.sh`` put the dependencies into ``lib/`` beside it."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "lib"), str(HERE)]

from httppush_plugin.source import run  # noqa: E402  (needs the path above)

if __name__ == "__main__":
    run(HERE, sys.argv)
