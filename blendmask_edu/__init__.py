"""blendmask_edu: BlendMask (Chen et al., CVPR 2020) from small, readable PyTorch pieces."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("blendmask_edu")  # the installed distribution's version
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
