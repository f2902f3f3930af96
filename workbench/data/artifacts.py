"""Remote-sensing-like image artifacts: seeded, documented transforms of uint8 RGB images.

The target domains of the Earth-Adapter study (``notebooks/earth_adapter.ipynb``): the same
scenes as the clean source, degraded the way satellite and aerial imagery is. Each artifact is a
frozen dataclass whose fields are its parameters (the defaults are what the study uses) and
whose :meth:`Artifact.apply` maps an (H, W, 3) uint8 image and a ``numpy`` generator to a new
(H, W, 3) uint8 image. :func:`apply_artifact` seeds that generator from ``(seed, artifact,
index)``, so item ``i`` of a domain is the same image on every run and every machine.

================  ==============================================================================
name              what it imitates
================  ==============================================================================
``clean``         the source domain: unchanged
``stripes``       detector striping / banding of push-broom scanners: a square wave of period
                  ``period`` rows, amplitude ``amplitude``, random phase, per-row gain jitter
``salt_pepper``   dead / saturated pixels: a fraction ``amount`` set to black or white
``gaussian``      sensor read noise: additive N(0, ``sigma``²) per pixel and channel
``jpeg``          compression blocking: JPEG at ``quality`` (8 × 8 DCT blocks)
``haze``          atmospheric scattering, I = J·t + A·(1 − t): transmission ``t`` (± jitter)
                  towards a grey-blue airlight ``A``: contrast loss
``colour_cast``   white-balance / illumination error: per-channel gains and offsets (warm)
================  ==============================================================================

>>> import numpy as np
>>> image = np.full((16, 16, 3), 200, dtype=np.uint8)
>>> out = apply_artifact(image, "salt_pepper", seed=0, index=3)
>>> out.shape, out.dtype, bool((out != image).any())
((16, 16, 3), dtype('uint8'), True)
>>> bool((apply_artifact(image, "salt_pepper", seed=0, index=3) == out).all())  # seeded
True
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import numpy as np

from workbench._registry import Registry

__all__ = [
    "ARTIFACTS",
    "TARGET_ARTIFACTS",
    "Artifact",
    "ColourCast",
    "GaussianNoise",
    "Haze",
    "Jpeg",
    "SaltPepper",
    "Stripes",
    "apply_artifact",
    "artifact_rng",
]


class Artifact:
    """Base class: ``apply(image (H, W, 3) uint8, rng) -> (H, W, 3) uint8``."""

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Clean(Artifact):
    """The source domain: the image unchanged."""

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return image.copy()


@dataclass(frozen=True)
class Stripes(Artifact):
    """Periodic banding of whole scan lines (push-broom detector striping).

    Row y gets ``amplitude · s(y) · g_y`` added to every pixel and channel, with s a ±1 square
    wave of ``period`` rows (random phase) and g_y ~ U(1 − jitter, 1 + jitter) per row.
    """

    period: int = 6
    amplitude: float = 60.0
    jitter: float = 0.5

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h = image.shape[0]
        phase = int(rng.integers(self.period))
        wave = np.where((np.arange(h) + phase) % self.period < self.period / 2, 1.0, -1.0)
        gain = rng.uniform(1 - self.jitter, 1 + self.jitter, size=h)
        offset = self.amplitude * wave * gain  # (H,)
        return _clip(image.astype(np.float64) + offset[:, None, None])


@dataclass(frozen=True)
class SaltPepper(Artifact):
    """A fraction ``amount`` of pixels (all channels) set to 0 or 255, half each."""

    amount: float = 0.06

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = image.copy()
        hit = rng.random(image.shape[:2]) < self.amount
        salt = rng.random(image.shape[:2]) < 0.5
        out[hit & salt] = 255
        out[hit & ~salt] = 0
        return out


@dataclass(frozen=True)
class GaussianNoise(Artifact):
    """Additive white Gaussian noise of standard deviation ``sigma`` (of 255) per channel."""

    sigma: float = 30.0

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _clip(image.astype(np.float64) + rng.normal(0.0, self.sigma, image.shape))


@dataclass(frozen=True)
class Jpeg(Artifact):
    """JPEG compression at ``quality`` (PIL, 4:2:0 chroma subsampling): 8 × 8 blocking."""

    quality: int = 8

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=self.quality)
        buf.seek(0)
        return np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8).copy()


@dataclass(frozen=True)
class Haze(Artifact):
    """Koschmieder's scattering model ``I = J·t + A·(1 − t)``: transmission ``t`` (uniform
    jitter ± ``jitter`` per image) towards the airlight ``A`` (grey-blue): contrast loss."""

    transmission: float = 0.45
    jitter: float = 0.05
    airlight: tuple[float, float, float] = (200.0, 205.0, 215.0)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        t = self.transmission + rng.uniform(-self.jitter, self.jitter)
        a = np.asarray(self.airlight, dtype=np.float64)
        return _clip(image.astype(np.float64) * t + a * (1 - t))


@dataclass(frozen=True)
class ColourCast(Artifact):
    """Per-channel gains and offsets (a warm cast: blue suppressed), each gain jittered by a
    factor U(1 − jitter, 1 + jitter) per image."""

    gains: tuple[float, float, float] = (1.0, 0.8, 0.55)
    offsets: tuple[float, float, float] = (25.0, 10.0, 0.0)
    jitter: float = 0.05

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        g = np.asarray(self.gains) * rng.uniform(1 - self.jitter, 1 + self.jitter, size=3)
        return _clip(image.astype(np.float64) * g + np.asarray(self.offsets))


#: Artifact name → the transform with the study's parameters.
ARTIFACTS: Registry[Artifact] = Registry("artifact")
for _name, _artifact in (
    ("clean", Clean()),
    ("stripes", Stripes()),
    ("salt_pepper", SaltPepper()),
    ("gaussian", GaussianNoise()),
    ("jpeg", Jpeg()),
    ("haze", Haze()),
    ("colour_cast", ColourCast()),
):
    ARTIFACTS.register(_name)(_artifact)

#: The target domains of the study, in table order.
TARGET_ARTIFACTS: tuple[str, ...] = (
    "stripes",
    "salt_pepper",
    "gaussian",
    "jpeg",
    "haze",
    "colour_cast",
)


def artifact_rng(name: str, seed: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of domain ``name`` under ``seed`` (stable across runs:
    the name enters through its CRC-32, not through registry order)."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode()), int(index)])


def apply_artifact(
    image: np.ndarray, name: str | Artifact, seed: int = 0, index: int = 0
) -> np.ndarray:
    """Apply artifact ``name`` (a registry name or an :class:`Artifact`) to one image.

    Args:
        image: (H, W, 3) uint8 RGB.
        name: Registry name (``ARTIFACTS.names()``) or an artifact with custom parameters.
        seed: Domain seed.
        index: Item index (each item draws its own noise).

    Returns:
        A new (H, W, 3) uint8 array.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"apply_artifact: image must be an (H, W, 3) uint8 array, got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"apply_artifact: image must be uint8, got {image.dtype}")
    if isinstance(name, Artifact):
        artifact, key = name, type(name).__name__
    else:
        key, artifact, _ = ARTIFACTS.resolve(name)
    out = artifact.apply(image, artifact_rng(key, seed, index))
    return np.ascontiguousarray(out, dtype=np.uint8)
