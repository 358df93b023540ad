"""Random numbers keyed by (seed, corruption, severity, image index), batch-size independent.

Every random value a corruption needs is a function of its key and the image's index in
the dataset, so an image is corrupted identically whatever batch it travels in and on
CPU or GPU alike. Per-image seeds come from SplitMix64's finaliser (on int64 tensors,
whose arithmetic wraps around; a test pins it against the Python version).
"""

from __future__ import annotations

import hashlib

import torch

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 value torch stores."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 tensors (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser, elementwise on an int64 tensor."""
    x = (x ^ _shr(x, 30)) * _signed(_MIX1)
    x = (x ^ _shr(x, 27)) * _signed(_MIX2)
    return x ^ _shr(x, 31)


def mix64_int(x: int) -> int:
    """The same finaliser on a Python int (reference for tests and key derivation)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * _MIX1) & _MASK64
    x = ((x ^ (x >> 27)) * _MIX2) & _MASK64
    return x ^ (x >> 31)


def corruption_key(seed: int, corruption: str, severity: int, param_set: str) -> int:
    """A stable 63-bit key for one (seed, corruption, severity, parameter set)."""
    text = f"djepa-bench/corruption/{seed}/{corruption}/{severity}/{param_set}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


class KeyedRandom:
    """Random draws for a batch of images, each a function of (key, image index, stream).

    `indices` are the images' positions in their dataset (shape (N,)); each call names a
    `stream` so different draws of one corruption never share numbers. Every (image,
    stream) pair gets its own CPU generator seeded by hashing (key, index, stream), and
    the draws are moved to `device` afterwards, so results do not depend on the batch
    size or the device.
    """

    def __init__(self, key: int, indices: torch.Tensor, device: torch.device | str):
        self.key = key
        self.device = torch.device(device)
        self.indices = torch.as_tensor(indices, dtype=torch.int64).cpu()
        self._generator = torch.Generator()

    def seeds(self, stream: int) -> list[int]:
        """The 63-bit seed of every image for `stream`."""
        stream_key = _signed(mix64_int(self.key ^ mix64_int(stream + 1)))
        mixed = mix64(self.indices * _signed(_GOLDEN) + stream_key)
        return _shr(mixed, 1).tolist()

    def _draw(self, stream: int, shape: tuple[int, ...], dtype: torch.dtype, fill) -> torch.Tensor:
        out = torch.empty((len(self.indices), *shape), dtype=dtype)
        gen = self._generator
        for i, seed in enumerate(self.seeds(stream)):
            gen.manual_seed(seed)
            fill(out[i], gen)
        return out.to(self.device)

    def uniform(self, stream: int, shape: tuple[int, ...] = ()) -> torch.Tensor:
        """(N, *shape) float32 uniform on [0, 1)."""
        return self._draw(stream, shape, torch.float32, lambda t, g: t.uniform_(0, 1, generator=g))

    def normal(
        self, stream: int, shape: tuple[int, ...] = (), mean: float = 0.0, std: float = 1.0
    ) -> torch.Tensor:
        """(N, *shape) float32 normal draws."""
        return self._draw(
            stream, shape, torch.float32, lambda t, g: t.normal_(mean, std, generator=g)
        )

    def integers(
        self, stream: int, low: int, high: int, shape: tuple[int, ...] = ()
    ) -> torch.Tensor:
        """(N, *shape) int64 uniform on [low, high) like numpy's randint."""
        return self._draw(
            stream, shape, torch.int64, lambda t, g: t.random_(low, high, generator=g)
        )

    def generators(self, stream: int) -> list[torch.Generator]:
        """One seeded CPU torch.Generator per image, for samplers with no fill form."""
        return [torch.Generator().manual_seed(seed) for seed in self.seeds(stream)]
