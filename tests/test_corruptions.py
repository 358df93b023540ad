"""The corruption package: every corruption keeps shape/dtype/range, grows with severity,
is deterministic per image whatever the batch, and matches reference formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from djepa_bench.errors import UserError
from djepa_bench.eval_protocols.corruptions import (
    COMMON,
    CORRUPTIONS,
    EXTRA,
    FAMILIES,
    REGISTRY,
    corrupt,
    family_of,
    ops,
    resolve_corruptions,
    resolve_param_set,
    resolve_severities,
    rng,
    substitute_of,
)
from djepa_bench.eval_protocols.corruptions.blur import disk_kernel, glass_source_map
from djepa_bench.eval_protocols.corruptions.extra import canny, chamfer_norm, edge_distance
from djepa_bench.eval_protocols.corruptions.official import available, layout, official_split
from djepa_bench.eval_protocols.corruptions.registry import corruption, registered
from djepa_bench.eval_protocols.corruptions.weather import plasma_fractal

# Corruptions whose output does not depend on the seed.
DETERMINISTIC = {
    "defocus_blur", "zoom_blur", "gaussian_blur", "brightness", "contrast", "pixelate",
    "jpeg_compression", "saturate",
}  # fmt: skip


def cifar_like(n: int = 12, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Natural-image-like uint8 batch: smooth colour gradients, 1/f-ish texture and a few
    flat-coloured shapes with hard edges (so blurs, noise and colour changes all bite)."""
    g = torch.Generator().manual_seed(seed)
    corners = torch.rand(n, 3, 2, 2, generator=g)
    x = torch.nn.functional.interpolate(corners, size=(size, size), mode="bilinear")
    for octave, cells in enumerate((4, 8, 16)):
        noise = torch.rand(n, 1, cells, cells, generator=g) - 0.5
        up = torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear")
        x = x + 0.25 * 0.6**octave * up
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for _ in range(3):
        cy, cx = torch.randint(4, size - 4, (2, n), generator=g)
        r = torch.randint(3, size // 3, (n,), generator=g)
        inside = ((yy - cy.view(n, 1, 1)) ** 2 + (xx - cx.view(n, 1, 1)) ** 2) < r.view(
            n, 1, 1
        ) ** 2
        colour = torch.rand(n, 3, 1, 1, generator=g)
        x = torch.where(inside[:, None], colour, x)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return cifar_like()


# --- per corruption ----------------------------------------------------------------------


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shape_dtype_and_range(name, batch):
    out = corrupt(batch[:4], name, 3)
    assert out.shape == batch[:4].shape and out.dtype == torch.uint8
    floats = corrupt(batch[:4].float() / 255, name, 5)
    assert floats.dtype == torch.float32 and floats.shape == (4, 3, 32, 32)
    assert torch.isfinite(floats).all() and floats.min() >= 0 and floats.max() <= 1
    assert (floats - batch[:4].float() / 255).abs().mean() > 1e-3  # it does something
    grey = corrupt(batch[:3, :1, :16, :16], name, 4)  # digits / fashion-mnist are grey
    assert grey.shape == (3, 1, 16, 16) and grey.dtype == torch.uint8
    assert not torch.equal(grey, batch[:3, :1, :16, :16])


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_uint8_output_truncates_like_the_original(name, batch):
    """8-bit output is np.uint8 of the float result (truncation), as the published
    CIFAR-10-C arrays; rounded only where the original ends in a rounding 8-bit library
    call (ImageMagick's motion blur, PIL's resize)."""
    x = batch[:4]
    as_float = corrupt(x.float() / 255, name, 3, seed=2) * 255
    as_uint8 = corrupt(x, name, 3, seed=2)
    expected = as_float.round() if REGISTRY[name].rounding == "round" else as_float.floor()
    differs = (as_uint8.float() - expected).abs()
    # float32 ties: a value within 1e-3 of an integer may land either side
    near_integer = (as_float - as_float.round()).abs() < 1e-3
    assert (differs[~near_integer] == 0).all(), name
    assert differs.max() <= 1
    assert REGISTRY[name].rounding == ("round" if name in ("motion_blur", "pixelate") else "floor")


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_same_image_same_corruption_in_any_batch(name, batch):
    x = batch[:7]
    whole = corrupt(x, name, 2, seed=5)
    parts = torch.cat(
        [corrupt(x[i : i + 3], name, 2, seed=5, indices=torch.arange(i, min(i + 3, 7)))
         for i in range(0, 7, 3)]
    )  # fmt: skip
    alone = corrupt(x[4:5], name, 2, seed=5, indices=torch.tensor([4]))
    assert torch.equal(whole, parts)
    assert torch.equal(whole[4:5], alone)
    again = corrupt(x, name, 2, seed=5)
    assert torch.equal(whole, again)
    other_seed = corrupt(x, name, 2, seed=6)
    assert torch.equal(whole, other_seed) == (name in DETERMINISTIC)


def _change(clean: torch.Tensor, out: torch.Tensor) -> float:
    return (out.float() - clean.float()).abs().mean().item()


def _decorrelation(clean: torch.Tensor, out: torch.Tensor) -> float:
    a = clean.float().flatten(1)
    b = out.float().flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    corr = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-9)
    return (1 - corr).mean().item()


# Where the published parameters are not monotone in mean absolute change, the test checks
# what does grow (documented in eval_protocols/corruptions/params.py's tables):
# - frost blends c0*x + c1*frost with c0 falling and c1 rising: the frost share grows, so
#   the image decorrelates from the clean one, while the mean change goes up and down.
# - saturate desaturates at severities 1-2 and oversaturates at 3-5.
# - glass_blur (CIFAR set) alternates sigma; at equal sigma, 2 swap passes beat 1.
# - spatter switches from water drops (1-3) to mud (4-5).
# - elastic_transform (CIFAR set) shrinks the affine jitter while the local warp grows; the
#   mean change follows the jitter and falls, as the original's does.
# tests/test_corruption_fidelity.py checks every trend against the official generator.
PIECEWISE = {
    "saturate": [(1, 2), (3, 4), (4, 5)],
    "glass_blur": [(2, 4), (3, 5)],
    "spatter": [(1, 2), (2, 3), (4, 5)],
}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_grows(name, batch):
    """On CIFAR-like images (smooth regions, texture, hard edges) the mean absolute change
    from the clean image grows with severity 1..5 (3% slack: draws differ per severity)."""
    outs = {s: corrupt(batch, name, s, seed=1) for s in range(1, 6)}
    measure = _decorrelation if name == "frost" else _change
    values = {s: measure(batch, out) for s, out in outs.items()}
    assert all(v > 0 for v in values.values()), values
    if name == "elastic_transform":  # the affine jitter shrinks with severity: it falls
        assert values[5] < values[1], values
        return
    pairs = PIECEWISE.get(name, [(s, s + 1) for s in range(1, 5)])
    for lo, hi in pairs:
        assert values[hi] >= 0.97 * values[lo], (lo, hi, values)
    if name not in PIECEWISE:
        assert values[5] > values[1], values


# --- reference checks ----------------------------------------------------------------------


def test_mix64_matches_python_reference():
    values = [0, 1, 12345, -7, 2**62 + 3]
    torch_out = rng.mix64(torch.tensor(values, dtype=torch.int64)).tolist()
    python_out = [rng._signed(rng.mix64_int(v)) for v in values]
    assert torch_out == python_out


def test_gaussian_blur_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(2, 3, 20, 24, dtype=torch.float64)
    ours = ops.gaussian_blur(x, 1.3)
    ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 1.3, 1.3), mode="nearest", truncate=4)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-10)
    sym = ops.gaussian_blur(x, 2.0, mode="symmetric", truncate=3.0)
    ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 2, 2), mode="reflect", truncate=3)
    np.testing.assert_allclose(sym.numpy(), ref, atol=1e-10)


def test_clipped_zoom_matches_scipy_zoom():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    for factor in (1.01, 1.13, 1.75, 2.25):
        h = 32
        ch = int(math.ceil(h / factor))
        top = (h - ch) // 2
        z = ndimage.zoom(x[0, 0, top : top + ch, top : top + ch].numpy(), factor, order=1)
        trim = (z.shape[0] - h) // 2
        np.testing.assert_allclose(
            ops.clipped_zoom(x, factor)[0, 0].numpy(), z[trim : trim + h, trim : trim + h],
            atol=1e-9,
        )  # fmt: skip


def test_pixelate_matches_pil_box_resize():
    from PIL import Image

    x = cifar_like(2)
    out = corrupt(x, "pixelate", 5)  # CIFAR factor 0.65: 32 -> 20 -> 32
    for i in range(2):
        img = Image.fromarray(x[i].permute(1, 2, 0).numpy())
        ref = img.resize((20, 20), Image.BOX).resize((32, 32), Image.BOX)
        diff = np.abs(np.asarray(ref, dtype=int) - out[i].permute(1, 2, 0).numpy().astype(int))
        assert diff.max() <= 2  # PIL rounds to 8 bits between the two passes


def _rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """skimage.color.rgb2hsv, written out."""
    v = rgb.max(-1)
    delta = v - rgb.min(-1)
    s = np.where(v > 0, delta / np.where(v > 0, v, 1), 0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(delta > 0, delta, 1)
    h = np.where(r == v, (g - b) / safe, 0)
    h = np.where(g == v, 2 + (b - r) / safe, h)
    h = np.where(b == v, 4 + (r - g) / safe, h)
    h = np.where(delta > 0, (h / 6) % 1, 0)
    return np.stack([h, s, v], -1)


def _hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(hsv.shape)
    for k, (r, g, b) in enumerate(table):
        out[i == k] = np.stack([r, g, b], -1)[i == k]
    return out


@pytest.mark.parametrize(
    ("name", "severity"), [("brightness", 3), ("saturate", 1), ("saturate", 5)]
)
def test_hsv_corruptions_match_hsv_round_trip(name, severity):
    x = cifar_like(3).double() / 255
    x[0, :, :4, :4] = 0.5  # grey pixels: hue 0, as skimage
    rgb = x.permute(0, 2, 3, 1).numpy()
    hsv = _rgb2hsv(rgb)
    if name == "brightness":
        hsv[..., 2] = np.clip(hsv[..., 2] + [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1], 0, 1)
    else:
        scale, shift = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]
        hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0, 1)
    ref = np.clip(_hsv2rgb(hsv), 0, 1)
    ours = corrupt(x.float(), name, severity).permute(0, 2, 3, 1).double().numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_motion_blur_matches_shifted_sum():
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    angles = torch.tensor([30.0, -40.0])
    out = ops.motion_blur(x, 3, 1.5, angles)
    kernel = np.exp(-(np.arange(7) ** 2) / (2 * 1.5**2))
    kernel /= kernel.sum()
    for n, angle in enumerate(angles.tolist()):
        ref = np.zeros((3, 16, 16))
        for i in range(7):
            ox = math.ceil(i * math.cos(math.radians(angle)) - 0.5)
            oy = math.ceil(i * math.sin(math.radians(angle)) - 0.5)
            rows = np.clip(np.arange(16) + oy, 0, 15)
            cols = np.clip(np.arange(16) + ox, 0, 15)
            ref += kernel[i] * x[n].numpy()[:, rows][:, :, cols]
        np.testing.assert_allclose(out[n].numpy(), ref, atol=1e-7)


def test_glass_shuffle_replays_the_original_loop():
    """The original swaps rows of an (H, W, 3) array through views, which copies instead of
    swapping; the source map must reproduce that loop pixel for pixel."""
    gen = np.random.RandomState(0)
    h = w = 6
    delta = 1
    positions = (h - 2 * delta) * (w - 2 * delta)
    offsets = gen.randint(-delta, delta, size=(2, 2, positions, 2))
    source = glass_source_map(offsets, h, w, delta)
    for n in range(2):
        img = np.repeat(np.arange(h * w).reshape(h, w, 1), 3, axis=2)
        for it in range(2):
            k = 0
            for y in range(h - delta, delta, -1):
                for x in range(w - delta, delta, -1):
                    dx, dy = offsets[n, it, k]
                    k += 1
                    img[y, x], img[y + dy, x + dx] = img[y + dy, x + dx], img[y, x]
        assert np.array_equal(source[n], img[:, :, 0].reshape(-1))


def test_defocus_disk_is_normalised_and_symmetric():
    for radius, blur in ((0.3, 0.4), (1.5, 0.1), (10, 0.5)):
        k = disk_kernel(radius, blur)
        # OpenCV's reflect101 border adds ~1% when the disk touches the grid's edge (r > 8)
        assert abs(k.sum() - 1) < (1e-9 if radius <= 8 else 0.02)
        np.testing.assert_allclose(k, k.T, atol=1e-12)
        np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-12)


def test_shot_noise_is_poisson_and_impulse_flips_the_right_fraction():
    x = torch.full((4, 3, 32, 32), 128, dtype=torch.uint8)
    counts = corrupt(x.float() / 255, "shot_noise", 3).double() * 100  # c = 100
    lam = 128 / 255 * 100
    assert abs(counts.mean().item() - lam) < 0.5
    assert abs(counts.var().item() / lam - 1) < 0.1
    flipped = corrupt(x, "impulse_noise", 5) != 128  # 7% flipped, half salt
    assert abs(flipped.float().mean().item() - 0.07) < 0.01
    # float input off the 8-bit grid takes the per-image Poisson fallback: counts / c
    odd = torch.full((2, 1, 32, 32), 0.3001)
    photons = corrupt(odd, "shot_noise", 3).double() * 100
    assert torch.allclose(photons, photons.round(), atol=1e-4)
    assert abs(photons.mean().item() - 30.01) < 1.0


def test_canny_finds_thin_step_edges_only():
    flat = torch.full((1, 1, 12, 12), 90.0)
    assert not canny(flat, 50, 150).any()
    step = flat.clone()
    step[..., :, 6:] = 200.0
    edges = canny(step, 50, 150)
    assert edges.sum(-1).flatten().tolist() == [1] * 12  # one pixel wide, every row
    faint = flat.clone()
    faint[..., :, 6:] = 100.0  # gradient 40 < low threshold
    assert not canny(faint, 50, 150).any()


def test_edge_distance_is_opencvs_5x5_chamfer_distance_capped():
    """distanceTransform(DIST_L2, 5) is the cheapest path of steps costing 1, 1.4 and
    2.1969 (edge, corner, knight neighbour): brute force over every edge pixel agrees."""
    assert chamfer_norm(0, 3) == 3 and chamfer_norm(2, 2) == pytest.approx(2.8)
    assert chamfer_norm(1, -2) == pytest.approx(2.1969)
    assert chamfer_norm(5, 1) == pytest.approx(2.1969 + 3)
    gen = torch.Generator().manual_seed(0)
    edges = torch.rand(2, 1, 20, 23, generator=gen) > 0.97
    edges[1] = False
    edges[1, 0, 3, 4] = True  # one edge pixel: distances grow to the cap
    out = edge_distance(edges, 8)
    for n in range(2):
        points = edges[n, 0].nonzero().tolist()
        for y in range(20):
            for x in range(23):
                want = min([chamfer_norm(y - py, x - px) for py, px in points] + [8.0])
                assert out[n, 0, y, x].item() == pytest.approx(want, abs=1e-5)
    assert (edge_distance(torch.zeros(1, 1, 5, 5, dtype=torch.bool), 20) == 20).all()


def test_plasma_fractal_in_unit_range():
    r = rng.KeyedRandom(7, torch.arange(3), "cpu")
    maps = plasma_fractal(r, 32, 2.0)
    assert maps.shape == (3, 32, 32)
    assert maps.min() == 0 and maps.max() == 1
    assert not torch.equal(maps[0], maps[1])


def test_imagenet_parameters_on_larger_images():
    x = cifar_like(2, size=72)
    assert resolve_param_set("auto", 72) == "imagenet"
    for name in CORRUPTIONS:
        out = corrupt(x, name, 1)
        assert out.shape == x.shape and _change(x, out) > 0, name
    small = corrupt(x, "gaussian_noise", 1, param_set="cifar")  # selectable
    assert _change(x, small) < _change(x, corrupt(x, "gaussian_noise", 1))


# --- names, severities, errors -------------------------------------------------------------


def test_names_families_and_errors():
    # the paper's order, and ImageNet-C's families (brightness is weather there)
    assert CORRUPTIONS == (
        "gaussian_noise", "shot_noise", "impulse_noise",
        "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "frost", "fog", "brightness",
        "contrast", "elastic_transform", "pixelate", "jpeg_compression",
        "speckle_noise", "gaussian_blur", "spatter", "saturate",
    )  # fmt: skip
    assert CORRUPTIONS[:15] == COMMON and CORRUPTIONS[15:] == EXTRA
    assert FAMILIES == {
        "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
        "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
        "weather": ("snow", "frost", "fog", "brightness"),
        "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
        "extra": ("speckle_noise", "gaussian_blur", "spatter", "saturate"),
    }
    assert family_of("brightness") == "weather" and family_of("spatter") == "extra"
    assert substitute_of("frost") == "procedural frost textures"
    assert [n for n in CORRUPTIONS if substitute_of(n)] == ["frost"]
    assert resolve_corruptions("all") == list(CORRUPTIONS)
    assert resolve_corruptions("noise") == list(FAMILIES["noise"])
    assert resolve_corruptions("extra") == list(EXTRA)
    assert resolve_corruptions("common") == list(COMMON)
    assert resolve_corruptions("fog, blur") == [*FAMILIES["blur"], "fog"]  # canonical order
    with pytest.raises(UserError, match="did you mean gaussian_noise"):
        resolve_corruptions("gaussian_nosie")
    assert resolve_severities("5,1,3") == [1, 3, 5]
    with pytest.raises(UserError, match="severity '6'"):
        resolve_severities("1,6")
    with pytest.raises(UserError, match="C = 1 or 3"):
        corrupt(torch.zeros(2, 4, 8, 8, dtype=torch.uint8), "fog", 1)
    with pytest.raises(UserError, match="severity must be 1..5"):
        corrupt(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "fog", 0)
    with pytest.raises(UserError, match="parameter set"):
        corrupt(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "fog", 1, param_set="tiny")
    with pytest.raises(UserError, match="unknown corruption 'smog'"):
        family_of("smog")


def test_registry_decorator_checks_its_entries():
    assert list(registered()) == list(CORRUPTIONS)
    assert REGISTRY["fog"].params(2, "imagenet") == (2, 2)
    assert REGISTRY["fog"].params(2, "cifar") == (0.5, 3)
    five = [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="registered twice"):
        corruption("fog", "weather", cifar=five, imagenet=five)(lambda *a, **k: None)
    with pytest.raises(ValueError, match="unknown family 'sky'"):
        corruption("hail", "sky", cifar=five, imagenet=five)(lambda *a, **k: None)
    with pytest.raises(ValueError, match="severities 1..5"):
        corruption("hail", "weather", cifar=five[:4], imagenet=five)(lambda *a, **k: None)
    assert "hail" not in registered()


# --- official pre-corrupted sets -------------------------------------------------------------


def _clean_like(num_classes: int = 3, channels: int = 3):
    from djepa_bench.data import ImageSplit

    return ImageSplit(
        name="fake", split="test", classes=[f"c{i}" for i in range(num_classes)],
        labels=torch.zeros(1, dtype=torch.long), mean=(0.5,) * channels, std=(0.25,) * channels,
        image_size=8, channels=channels, images=torch.zeros(1, channels, 8, 8, dtype=torch.uint8),
    )  # fmt: skip


def test_reads_cifar_c_arrays(tmp_path):
    block = 4
    images = np.zeros((5 * block, 8, 8, 3), dtype=np.uint8)
    for s in range(5):
        images[s * block : (s + 1) * block] = 10 * (s + 1)  # severity s+1 painted 10*(s+1)
    images[2 * block + 1, 0, 0] = (1, 2, 3)
    labels = np.tile(np.arange(block) % 3, 5).astype(np.uint8)
    np.save(tmp_path / "fog.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    assert layout(tmp_path) == "cifar" and available(tmp_path) == ["fog"]
    split = official_split(tmp_path, "fog", 3, _clean_like())
    assert split.images.shape == (block, 3, 8, 8) and split.images.dtype == torch.uint8
    assert (split.images[0] == 30).all()
    assert split.images[1, :, 0, 0].tolist() == [1, 2, 3]  # HWC -> CHW
    assert split.labels.tolist() == [0, 1, 2, 0]
    assert split.mean == (0.5,) * 3 and split.classes == ["c0", "c1", "c2"]
    np.save(tmp_path / "labels.npy", labels[:block])  # labels of one block only
    assert official_split(tmp_path, "fog", 5, _clean_like()).labels.tolist() == [0, 1, 2, 0]
    with pytest.raises(UserError, match="snow.npy not found"):
        official_split(tmp_path, "snow", 1, _clean_like())
    np.save(tmp_path / "bad.npy", images[:7])
    with pytest.raises(UserError, match="5 equal severity blocks"):
        official_split(tmp_path, "bad", 1, _clean_like())
    with pytest.raises(UserError, match="has class 2"):
        official_split(tmp_path, "fog", 1, _clean_like(num_classes=2))


def test_reads_imagenet_c_folders(tmp_path):
    from PIL import Image

    for family, name in (("noise", "gaussian_noise"), (None, "fog")):
        for cls, value in (("c2", 200), ("c0", 40)):
            folder = tmp_path / (family or "") / name / "2" / cls
            folder.mkdir(parents=True)
            for k in range(2):
                Image.fromarray(np.full((8, 8, 3), value + k, dtype=np.uint8)).save(
                    folder / f"img{k}.png"
                )
    assert layout(tmp_path) == "imagenet"
    assert available(tmp_path) == ["fog", "gaussian_noise"]
    for name in ("fog", "gaussian_noise"):
        split = official_split(tmp_path, name, 2, _clean_like())
        assert split.labels.tolist() == [0, 0, 2, 2]  # class names mapped to the clean order
        assert split.images[:, 0, 0, 0].tolist() == [40, 41, 200, 201]
    with pytest.raises(UserError, match="no folder fog/3"):
        official_split(tmp_path, "fog", 3, _clean_like())
    with pytest.raises(UserError, match="not a class of fake"):
        official_split(tmp_path, "fog", 2, _clean_like(num_classes=2))
    with pytest.raises(UserError, match="not a folder"):
        layout(tmp_path / "missing")


# --- the grid command -----------------------------------------------------------------------


def test_corruptions_grid_command(run_cli, tmp_path):
    out = tmp_path / "grid.png"
    result = run_cli(
        "corruptions-grid", "--dataset", "synthetic", "--corruptions", "noise,fog",
        "--severities", "1,5", "--index", "0,3", "--out", out,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(out) as img:
        assert img.size[0] > img.size[1] * 0.8  # 6 columns, 5 rows
    bad = run_cli("corruptions-grid", "--dataset", "synthetic", "--corruptions", "smog")
    assert bad.code == 2 and "unknown corruption 'smog'" in bad.err
    assert "Traceback" not in bad.err
