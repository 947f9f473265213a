import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config):
    """hypothesis keeps its files in a temporary folder, never in the checkout (tests write only to tmp)."""
    import tempfile

    try:
        from hypothesis.configuration import set_hypothesis_home_dir
    except ImportError:  # the property-based tests then fail to import, saying why
        return
    config._surgeon_hypothesis_dir = tempfile.mkdtemp(prefix="surgeon-hypothesis-")
    set_hypothesis_home_dir(config._surgeon_hypothesis_dir)


def pytest_unconfigure(config):
    import shutil

    folder = getattr(config, "_surgeon_hypothesis_dir", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
