"""emprobe: induce, measure and diagnose misalignment in open-weights language models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("emprobe")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
