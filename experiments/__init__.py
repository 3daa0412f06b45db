"""didlab's experiments: Hydra configs, the Monte Carlo engine, runners and reports."""

from pathlib import Path

#: the Hydra config folder (``conf/`` beside the packages); defined here, in the package's
#: light root, so that ``didlab --help`` finds it without importing estimators or plotting
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
