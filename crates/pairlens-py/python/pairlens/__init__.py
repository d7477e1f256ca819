"""pairlens: why a CLIP-style dual encoder finds an image and a caption similar.

Second-order token × patch attributions (Möller et al., TMLR'25), computed by the Rust library
pairlens; the numbers equal those of the ``pairlens`` command line tool on the same inputs.

>>> import pairlens
>>> ex = pairlens.Explainer()                      # the built-in model; or a model directory
>>> r = ex.explain("examples/mosaics/00000.png", ["a running shoe next to a boot"])
>>> r[0].interactions.shape                        # [tokens, 1 + patches], CLS column first
"""

from ._pairlens import (
    MAX_STEPS,
    ComputeError,
    Error,
    Explainer,
    Explanation,
    FileError,
    ImageSide,
    InputError,
    MissingFileError,
    ModelError,
    __version__,
    save,
)

__all__ = [
    "MAX_STEPS",
    "ComputeError",
    "Error",
    "Explainer",
    "Explanation",
    "FileError",
    "ImageSide",
    "InputError",
    "MissingFileError",
    "ModelError",
    "__version__",
    "save",
]
