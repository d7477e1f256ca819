"""pairlens: why a CLIP-style dual encoder finds an image and a caption similar.

Second-order token × patch attributions (Möller et al., TMLR'25), computed by the Rust library
pairlens; the numbers equal those of the ``pairlens`` command line tool on the same inputs.
Every computation releases the GIL, so several threads can explain at once with one
``Explainer``.
"""

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, final

import numpy as np
import numpy.typing as npt

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

__version__: str
"""The version of the pairlens library inside this package."""

MAX_STEPS: int
"""The largest number of path points N accepted (``steps``)."""

_PILImage = Any  # a PIL.Image.Image (Pillow is optional)
_ImageInput = Union[str, "os.PathLike[str]", _PILImage, npt.NDArray[np.uint8]]
"""An image: a file path (JPEG, PNG, WebP), a ``PIL.Image.Image`` (modes 1, L, LA, P, RGB,
RGBA and the other 8-bit modes, converted as Pillow would), or a numpy ``uint8`` array
``[H, W]`` (L), ``[H, W, 2]`` (LA), ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA)."""

class Error(Exception):
    """Base class of every error pairlens raises; ``str(e)`` is the message the CLI prints
    after ``error:``."""

class InputError(Error, ValueError):
    """A bad argument or input: a layer out of range, an empty or too long caption, an image
    that cannot be read, a span or box outside the explanation."""

class ModelError(Error, ValueError):
    """A checkpoint pairlens cannot use: not a checkpoint directory, a bad config, a missing or
    misshapen tensor, a broken tokenizer."""

class MissingFileError(Error, FileNotFoundError):
    """A file or directory the input needs does not exist (an image, a model directory, a
    checkpoint's config or weights)."""

class FileError(Error, OSError):
    """Reading or writing a file failed at the operating-system level."""

class ComputeError(Error, RuntimeError):
    """A computation failed: a NaN or infinite result (broken weights or input), or a tensor
    operation error."""

@final
class Explainer:
    """A CLIP-style dual encoder opened for explaining.

    ``model`` is a Hugging Face CLIP directory (``config.json``, ``model.safetensors``,
    ``tokenizer.json``) or an OpenCLIP hub directory (``open_clip_config.json``,
    ``open_clip_model.safetensors``); ``None`` opens the built-in model (a small CLIP trained
    on Fashion-MNIST mosaics). Nothing is ever downloaded. ``device`` is ``"cpu"``, ``"cuda"``
    or ``"cuda:N"`` (CUDA needs a build with the ``cuda`` feature).

    Raises ``MissingFileError`` for a directory that does not exist, ``ModelError`` for one
    pairlens cannot read, ``InputError`` for an unknown device.
    """

    def __new__(
        cls, model: Union[str, "os.PathLike[str]", None] = None, device: str = "cpu"
    ) -> "Explainer": ...
    @property
    def model(self) -> str:
        """The model: its directory as given, or ``"built-in"``."""
    @property
    def layers(self) -> Tuple[int, int]:
        """Number of blocks of the (text, image) towers; valid layers are 0 ≤ L < that."""
    def explain(
        self,
        image: Union[_ImageInput, "ImageSide"],
        captions: Sequence[str],
        *,
        text_layer: Optional[int] = None,
        image_layer: Optional[int] = None,
        steps: Optional[int] = None,
        mode: Optional[str] = None,
        truncate: bool = False,
        progress: Optional[Callable[[str, int, int], object]] = None,
    ) -> List["Explanation"]:
        """Explains each caption against ``image``; one ``Explanation`` per caption, in order.

        ``text_layer`` / ``image_layer``: the block whose *input* is attributed (default: the
        last block of each tower). ``steps``: path points N of the integrated Jacobians,
        1 ≤ N ≤ ``MAX_STEPS`` (default 10). ``mode``: ``"exclip"`` (default, the paper's
        quantity) or ``"cosine"``. ``truncate``: cut captions longer than the model's context
        instead of raising.

        ``progress(label, done, total)`` is called (from the computing thread, with the GIL) at
        the start of every phase of work (``label`` names it, e.g. "image tokens") and after
        every unit of it; an exception it raises stops the computation and is raised here, as
        is KeyboardInterrupt on Ctrl-C (checked at the same points).

        ``image`` may be an ``ImageSide`` from ``image()``: its image half is reused, and its
        image layer, steps and mode apply (giving other ones raises ``InputError``).
        The image is decoded and preprocessed by pairlens itself, bit-exact with the CLI.
        """
    def image(
        self,
        image: _ImageInput,
        *,
        image_layer: Optional[int] = None,
        steps: Optional[int] = None,
        mode: Optional[str] = None,
        progress: Optional[Callable[[str, int, int], object]] = None,
    ) -> "ImageSide":
        """The image side of ``image`` at these settings, reusable with ``explain`` for any
        number of captions (and text layers) at no further image cost. ``progress``: as in
        ``explain``."""
    def embed(
        self, image: _ImageInput, caption: str, *, truncate: bool = False
    ) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """The (image, text) embeddings, unnormalised, float32 ``[projection_dim]`` each (the
        CLI's ``pairlens embed``)."""
    def tokenize(self, caption: str, *, truncate: bool = False) -> List[str]:
        """The caption's tokens as the model's tokenizer makes them, SOT … EOT (the rows of
        an explanation)."""
    def unknown_words(self, caption: str) -> List[str]:
        """The words of ``caption`` the model's vocabulary does not hold (each is read as
        ``<unk>``), in order, each once."""

@final
class ImageSide:
    """The image half of explanations of one image at one image layer, N and mode: computed
    once by ``Explainer.image`` and shared by every caption explained against it."""

    @property
    def image_layer(self) -> int:
        """The block of the image tower whose input is attributed."""
    @property
    def steps(self) -> int:
        """Path points N."""
    @property
    def mode(self) -> str:
        """``"exclip"`` or ``"cosine"``."""
    @property
    def seconds(self) -> float:
        """Seconds its computation took."""
    @property
    def size(self) -> Tuple[int, int]:
        """(width, height) of the original image."""

@final
class Explanation:
    """One caption explained against one image: the token × image-token interaction matrix
    and the numbers that, with it, add up to the score:

    ``score = total + text_vs_image_reference + text_reference_vs_image
    − reference_vs_reference + residual``.
    """

    @property
    def interactions(self) -> npt.NDArray[np.float32]:
        """float32 ``[tokens, image tokens]``: rows are the tokens (CLIP: SOT … EOT; SigLIP:
        every position of the padded caption), column 0 the CLS image token if the model has
        one (``class_token``), then the patches row-major. A fresh copy on every access."""
    @property
    def tokens(self) -> List[str]:
        """Display strings of the tokens (the rows)."""
    @property
    def class_token(self) -> bool:
        """Whether column 0 of ``interactions`` is a class token (CLIP) or every column a
        patch (SigLIP)."""
    @property
    def caption(self) -> str:
        """The caption explained."""
    @property
    def score(self) -> float:
        """Cosine similarity of the image and caption embeddings."""
    @property
    def residual(self) -> float:
        """score − (Σ interactions + the reference terms); falls like 1/N."""
    @property
    def total(self) -> float:
        """Σ interactions over all entries."""
    @property
    def reference_terms(self) -> Dict[str, float]:
        """``text_vs_image_reference`` (f(x)·g(r_y)), ``text_reference_vs_image``
        (f̃(r_x)·g(y)) and ``reference_vs_reference`` (f̃(r_x)·g(r_y)), in the normalisation
        of the interactions."""
    @property
    def exclip_terms(self) -> Dict[str, float]:
        """exclip's own reference cosines (``score``, ``text_vs_image_reference``,
        ``text_reference_vs_image``, ``reference_vs_reference``), for comparison with it."""
    @property
    def grid(self) -> Tuple[int, int]:
        """The patch grid (rows, cols)."""
    @property
    def text_layer(self) -> int:
        """The text block whose input was attributed."""
    @property
    def image_layer(self) -> int:
        """The image block whose input was attributed."""
    @property
    def steps(self) -> int:
        """Path points N."""
    @property
    def mode(self) -> str:
        """``"exclip"`` or ``"cosine"``."""
    def token_totals(self) -> npt.NDArray[np.float32]:
        """Each token's total interaction (row sums of ``interactions``), float32 ``[tokens]``."""
    def span(self, start: int, end: int) -> npt.NDArray[np.float32]:
        """The heatmap of tokens ``start:end`` (half-open, SOT = 0) over the patches, float32
        ``[rows, cols]`` (the CLS column left out; see ``span_cls``); as the CLI's ``--span``."""
    def span_cls(self, start: int, end: int) -> Optional[float]:
        """The interaction of tokens ``start:end`` with the CLS image token; ``None`` when the
        image tower has no class token (SigLIP)."""
    def box(self, bounds: Tuple[float, float, float, float]) -> npt.NDArray[np.float32]:
        """Every token's interaction with the box ``(x0, y0, x1, y1)`` in pixels of the
        original image (mapped through resize and crop; patches weighted by the share of
        their area inside it), float32 ``[tokens]``; as the CLI's ``--box``."""
    def to_html(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        spans: Sequence[Tuple[int, int]] = (),
        boxes: Sequence[Tuple[float, float, float, float]] = (),
        overwrite: bool = False,
    ) -> None:
        """Writes a self-contained HTML report (pictures inlined, no external requests), as the
        CLI's ``--html``: the caption's tokens coloured by their total interaction, the
        whole-caption heatmap, a heatmap per span and a token strip per box, the conservation
        numbers. An existing file raises ``FileExistsError`` unless ``overwrite``."""
    def save(self, path: Union[str, "os.PathLike[str]"], *, overwrite: bool = False) -> None:
        """Writes the explanation as safetensors in the layout of the CLI's ``--out``
        (``interactions``, ``score``, ``residual``, ``reference_terms/…``,
        ``exclip_terms/…``; tokens and settings in the metadata). An existing file raises
        ``FileExistsError`` unless ``overwrite``."""

def save(
    explanations: Sequence[Explanation],
    path: Union[str, "os.PathLike[str]"],
    *,
    overwrite: bool = False,
) -> None:
    """Writes several explanations to one safetensors file, as the CLI's ``--out`` does for
    several captions (names prefixed ``caption1/``, ``caption2/``, …; one explanation: no
    prefix)."""
