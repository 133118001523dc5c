"""predict on your own images: preprocessing like MNIST's, the file formats people have, photos,
batches with a bad file, and clear errors - size bombs refused before decoding."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from harness.errors import StageError
from nn import serialize
from nn.model import Sequential, mlp_spec
from predict.digits import ink_and_box, to_input
from sources import images as images_module
from sources.images import MAX_PIXELS, read_pixels
from tests.project import GIB, ROOT, address_space_cap, assert_clean_failure, env

CAP = 2 * GIB  # the size-bomb tests run predict with its address space capped at this


def predict(*args, memory=None):
    return subprocess.run([sys.executable, "-m", "predict", *map(str, args)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, preexec_fn=address_space_cap(memory) if memory else None)


def digit(size=28):
    """A synthetic '1'-like stroke on black, ink bright."""
    img = np.zeros((size, size), np.uint8)
    img[6:22, 12:16] = 255
    return img


def seven(height=150, width=120, ink=0, paper=255):
    """A '7' drawn with a pen: uint8 (height, width), `ink` strokes on `paper`, off-centre."""
    img = Image.new("L", (width, height), paper)
    points = [(width * 0.25, height * 0.22), (width * 0.75, height * 0.22), (width * 0.45, height * 0.8)]
    ImageDraw.Draw(img).line(points, fill=ink, width=max(2, width // 14))
    return np.asarray(img)


def mnist_like(array: np.ndarray, tmp_path, name="ref.png") -> np.ndarray:
    Image.fromarray(array).save(tmp_path / name)
    return to_input(tmp_path / name, (28, 28))


def test_preprocessing_inverts_crops_scales_and_centres(tmp_path):
    canvas = np.full((120, 90), 250, np.uint8)  # light paper
    canvas[10:58, 5:17] = 10  # dark ink, far off-centre, 48x12
    Image.fromarray(canvas).save(tmp_path / "a.png")
    x = to_input(tmp_path / "a.png", (28, 28))
    assert x.shape == (28, 28) and x.dtype == np.uint8
    rows, cols = np.nonzero(x > 40)
    assert rows.max() - rows.min() + 1 in (20, 21)  # the longer side scaled to 20 px
    com = np.array([(np.arange(28) * x.sum(axis=1 - i)).sum() for i in (0, 1)]) / x.sum()
    assert np.all(np.abs(com - 14) <= 1.0)  # centred by centre of mass
    assert x[0].max() == 0 and x[:, 0].max() == 0  # black background


def test_dark_background_is_not_inverted(tmp_path):
    Image.fromarray(digit(60)).save(tmp_path / "b.png")
    x = to_input(tmp_path / "b.png", (28, 28))
    assert x[14, 14] > 200 and x[0, 0] == 0


def test_bold_ink_covering_most_of_the_picture_is_still_ink(tmp_path):
    canvas = np.full((40, 40), 255, np.uint8)
    canvas[3:37, 3:37] = 0  # 72 % of the pixels are ink; only the border is paper
    Image.fromarray(canvas).save(tmp_path / "bold.png")
    x = to_input(tmp_path / "bold.png", (28, 28))
    assert x[14, 14] == 255 and x[0, 0] == 0 and (x > 128).sum() == 20 * 20


# --- the formats people's files come in --------------------------------------------------------

def _palette(gray: np.ndarray) -> Image.Image:
    """A binary grey picture as a two-entry palette image: index 0 paper (white), 1 ink (black)."""
    img = Image.fromarray((gray < 128).astype(np.uint8), mode="P")
    img.putpalette([255, 255, 255, 0, 0, 0])
    return img


def _exif_rotated(gray: np.ndarray) -> tuple[Image.Image, dict]:
    """The picture stored sideways with EXIF orientation 6 ("rotate 90 clockwise to show"), as phones do."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return Image.fromarray(np.rot90(gray).copy()), {"exif": exif}


def _transparent_black_ink(gray):
    rgba = np.zeros(gray.shape + (4,), np.uint8)  # transparent black, as drawing apps export
    rgba[..., 3] = 255 - gray  # the strokes opaque black
    return Image.fromarray(rgba, mode="RGBA"), {}


def _transparent_white_ink(gray):
    la = np.stack([np.full_like(gray, 255), 255 - gray], axis=-1)  # white strokes on nothing
    return Image.fromarray(la, mode="LA"), {}


def _gif_first_frame(gray):
    other = _palette(seven(*gray.shape)[::-1].copy())  # a different second frame
    return _palette(gray), {"save_all": True, "append_images": [other], "transparency": 0}


def _pencil(gray: np.ndarray, full: float, dtype) -> Image.Image:
    """The picture as grey pencil (level 60 of 255) on grey paper (230), `full` being white."""
    values = (60 + gray * (170 / 255)) * (full / 255)
    return Image.fromarray((values.round() if np.issubdtype(dtype, np.integer) else values).astype(dtype))


FORMATS = {  # name -> (file name, the 8-bit picture -> (Pillow image, save options))
    "16-bit PNG": ("a.png", lambda g: (_pencil(g, 65535, np.uint16), {})),
    "32-bit integer TIFF": ("a.tif", lambda g: (_pencil(g, 65535, np.int32), {})),
    "float TIFF 0..1": ("a.tif", lambda g: (_pencil(g, 1, np.float32), {})),
    "RGBA, black ink on transparent": ("a.png", _transparent_black_ink),
    "LA, white ink on transparent": ("a.png", _transparent_white_ink),
    "palette PNG": ("a.png", lambda g: (_palette(g), {})),
    "palette PNG, transparent paper": ("a.png", lambda g: (_palette(g), {"transparency": 0})),
    "two-frame GIF, transparent paper": ("a.gif", _gif_first_frame),
    "colour JPEG-free RGB": ("a.png", lambda g: (Image.fromarray(np.stack([g, g, g], -1)), {})),
    "EXIF orientation 6": ("a.png", _exif_rotated),
}


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_gives_the_input_of_the_plain_8_bit_picture(name, tmp_path):
    gray = seven()
    reference = mnist_like(gray, tmp_path)
    filename, make = FORMATS[name]
    img, options = make(gray)
    img.save(tmp_path / filename, **options)
    x = to_input(tmp_path / filename, (28, 28))
    assert np.abs(x.astype(int) - reference).max() <= 1, name


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_read_as_rgb_is_its_grey_picture_in_three_equal_channels(name, tmp_path):
    filename, make = FORMATS[name]
    img, options = make(seven())
    img.save(tmp_path / filename, **options)
    gray, rgb = read_pixels(tmp_path / filename), read_pixels(tmp_path / filename, rgb=True)
    assert rgb.shape == (*gray.shape, 3) and rgb.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(rgb[..., c], gray, atol=0.51)  # Pillow rounds its grey conversion


def test_colour_strokes_on_a_transparent_canvas_land_on_white_paper_in_colour(tmp_path):
    rgba = np.zeros((12, 12, 4), np.uint8)
    rgba[3:9, 5:7] = (200, 30, 40, 255)  # a dark red bar, the rest fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "bar.png")
    rgb = read_pixels(tmp_path / "bar.png", rgb=True)
    assert (rgb[3:9, 5:7] == (200, 30, 40)).all() and (rgb[0, 0] == 255).all()
    mostly = np.full((12, 12, 4), (10, 120, 250, 255), np.uint8)
    mostly[6:, :, :3] = (240, 200, 20)  # a picture of two colours (median: the lower half's)
    mostly[0, :4, 3] = 0  # a few transparent pixels of a mostly opaque picture: its median colour
    Image.fromarray(mostly, mode="RGBA").save(tmp_path / "two.png")
    assert (read_pixels(tmp_path / "two.png", rgb=True)[0, 0] == (240, 200, 20)).all()


def test_a_page_with_thin_ink_and_transparent_corners_keeps_white_corners(tmp_path):
    """Rounded transparent corners on a white page with a thin 7 (2 % of it): the page's colour,
    not black paper (which predict then took for the page, and the page for ink)."""
    from PIL import ImageDraw

    page = Image.new("RGBA", (300, 300), (255, 255, 255, 255))
    ImageDraw.Draw(page).line([(100, 60), (200, 60), (130, 240)], fill=(0, 0, 0, 255), width=6)
    mask = Image.new("L", (300, 300), 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, 299, 299], radius=60, fill=255)
    page.putalpha(mask)
    page.save(tmp_path / "seven.png")
    grey = read_pixels(tmp_path / "seven.png")
    assert grey[0, 0] == 255 and grey[299, 299] == 255 and grey[60, 150] < 50


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_a_cut_out_of_one_colour_keeps_its_shape(tmp_path, mode):
    """An icon: one colour covering most of a transparent canvas. Filled with its own colour it
    was a flat square (two classes of such icons trained at chance): it lands on paper of the
    opposite brightness, and its outline is kept."""
    from PIL import ImageDraw

    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    ImageDraw.Draw(img).ellipse([0, 0, 15, 15], fill=(220, 30, 30, 255))  # ~70 % of the canvas
    img = img if mode == "RGBA" else img.convert("LA")
    img.save(tmp_path / "icon.png")
    alpha = np.asarray(img)[..., -1]
    assert alpha.mean() / 255 > 0.5
    grey = read_pixels(tmp_path / "icon.png")
    inside, outside = grey[alpha == 255], grey[alpha == 0]
    assert outside.min() == 255 and inside.max() < 128  # dark red on white: the circle is still there


@pytest.mark.parametrize("channels", [1, 3])
def test_a_model_of_pictures_gets_the_image_resized_not_framed(channels, tmp_path):
    """For an (H, W, C) model the picture is read as fetch reads folder images: no inversion, no
    crop, each channel resized bilinearly."""
    rgb = np.zeros((20, 16, 3), np.uint8)
    rgb[...] = (230, 220, 210)  # light paper
    rgb[5:15, 6:10] = (20, 60, 120)  # a dark blue block
    Image.fromarray(rgb).save(tmp_path / "block.png")
    x = to_input(tmp_path / "block.png", (10, 8, channels))
    assert x.shape == (10, 8, channels) and x.dtype == np.uint8
    pixels = Image.open(tmp_path / "block.png").convert("RGB" if channels == 3 else "L")
    expected = [np.asarray(Image.fromarray(np.asarray(band, np.float32)).resize((8, 10), Image.Resampling.BILINEAR))
                for band in pixels.split()]
    np.testing.assert_array_equal(x, np.clip(np.rint(np.stack(expected, axis=2)), 0, 255).astype(np.uint8))
    assert x[0, 0, 0] > 200  # the paper stays light


def test_a_fully_transparent_picture_is_empty(tmp_path):
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    with pytest.raises(StageError, match="clear.png: the image is empty"):
        to_input(tmp_path / "clear.png", (28, 28))


# --- photos: uneven light, grey paper, noise -------------------------------------------------

def photo(gray: np.ndarray, lo: float, hi: float, noise: float, seed=0) -> np.ndarray:
    """A photo of the drawing: light falling off from `hi` to `lo` across the page (diagonally,
    and towards the corners), ink reflecting 30 % of it, gaussian sensor noise."""
    h, w = gray.shape
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
    light = lo + (hi - lo) * (1 - 0.6 * (x + y) / 2 - 0.4 * ((x - 0.4) ** 2 + (y - 0.3) ** 2))
    reflectance = 0.3 + 0.7 * gray / 255
    rng = np.random.default_rng(seed)
    return np.clip(light * reflectance + rng.normal(0, noise, gray.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("lo", "hi", "noise"), [(110, 240, 8), (35, 110, 4)], ids=["bright page", "dim page"])
def test_photo_of_a_digit_is_cropped_to_the_digit(lo, hi, noise, tmp_path):
    gray = seven(300, 240)
    Image.fromarray(photo(gray, lo, hi, noise)).save(tmp_path / "photo.png")
    _, box = ink_and_box(read_pixels(tmp_path / "photo.png"))
    _, clean_box = ink_and_box(gray.astype(np.float32))
    for got, want in zip(box, clean_box):
        assert abs(got.start - want.start) <= 1 and abs(got.stop - want.stop) <= 1, (box, clean_box)
    x, reference = to_input(tmp_path / "photo.png", (28, 28)), mnist_like(gray, tmp_path)
    assert np.abs(x.astype(int) - reference).mean() < 1.0
    assert x[reference == 0].max() == 0  # no paper grain around the digit


def test_a_noisy_unevenly_lit_page_without_ink_is_empty(tmp_path):
    Image.fromarray(photo(np.full((200, 160), 255, np.uint8), 110, 240, 8)).save(tmp_path / "page.png")
    with pytest.raises(StageError, match="page.png: the image is empty"):
        to_input(tmp_path / "page.png", (28, 28))


# --- the command -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    spec = mlp_spec((28, 28), [8])
    spec.update(normalize={"mean": 33.0, "std": 78.0}, classes=[str(i) for i in range(10)])
    model = Sequential(spec)
    model.init_params(np.random.default_rng(0))
    path = tmp_path_factory.mktemp("m") / "model.npz"
    serialize.save(model, path)
    return path


def test_prints_top3_and_json(model_path, tmp_path):
    Image.fromarray(digit()).save(tmp_path / "d.png")
    out = predict(tmp_path / "d.png", "--model", model_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{tmp_path / 'd.png'}: ") and out.stdout.count("(") == 3
    out = predict(tmp_path / "d.png", "--model", model_path, "--json")
    result = json.loads(out.stdout)
    assert len(result[0]["top"]) == 3
    assert sum(t["probability"] for t in result[0]["top"]) <= 1.0 + 1e-6


@pytest.mark.parametrize("shape,good", [((8, 8, 2), False), ((8, 8, 4), False), ((8, 8, 3), True)])
def test_a_model_of_images_predict_cannot_make_is_refused_in_one_line(shape, good, tmp_path):
    model = Sequential({**mlp_spec(shape, [4]), "classes": [str(i) for i in range(10)]})
    model.init_params(np.random.default_rng(0))
    serialize.save(model, tmp_path / "m.npz")
    Image.fromarray(digit()).save(tmp_path / "d.png")
    proc = predict(tmp_path / "d.png", "--model", tmp_path / "m.npz", "--json")
    if good:
        assert proc.returncode == 0 and len(json.loads(proc.stdout)[0]["top"]) == 3, proc.stderr
    else:
        assert_clean_failure(proc, f"m.npz: expects inputs of shape {shape}; predict reads images as")


def test_missing_model(tmp_path):
    Image.fromarray(digit()).save(tmp_path / "d.png")
    assert_clean_failure(predict(tmp_path / "d.png", "--model", tmp_path / "none.npz"), "no such model file")


def test_not_an_image(model_path, tmp_path):
    (tmp_path / "x.png").write_text("I am not a PNG")
    assert_clean_failure(predict(tmp_path / "x.png", "--model", model_path), "x.png: not an image")


def test_empty_image(model_path, tmp_path):
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(tmp_path / "blank.png")
    assert_clean_failure(predict(tmp_path / "blank.png", "--model", model_path), "blank.png: the image is empty")


def test_missing_image(model_path, tmp_path):
    assert_clean_failure(predict(tmp_path / "nope.png", "--model", model_path), "nope.png: no such file")


def test_one_bad_file_in_a_batch_the_good_ones_are_still_predicted(model_path, tmp_path):
    Image.fromarray(digit()).save(tmp_path / "good1.png")
    Image.fromarray(seven()).save(tmp_path / "good2.png")
    (tmp_path / "bad.png").write_bytes(b"")
    files = [tmp_path / "good1.png", tmp_path / "bad.png", tmp_path / "good2.png"]
    out = predict(*files, "--model", model_path)
    assert_clean_failure(out, "bad.png: not an image")
    assert [line.split(": ")[0] for line in out.stdout.splitlines()] == [str(files[0]), str(files[2])]
    out = predict(*files, tmp_path / "gone.png", "--model", model_path, "--json")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert [line for line in out.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {files[1]}: not an image that can be read (an unknown or damaged format); "
        "save it as PNG or JPEG", f"error: {tmp_path / 'gone.png'}: no such file; check the path"]
    result = json.loads(out.stdout)
    assert [r["image"] for r in result] == [*map(str, files), str(tmp_path / "gone.png")]
    assert [len(r.get("top", [])) for r in result] == [3, 0, 3, 0]
    assert result[1]["error"].startswith("not an image") and result[3]["error"] == "no such file; check the path"


@pytest.mark.parametrize("top", ["0", "-1", "two"])
def test_top_must_be_at_least_one(top, model_path, tmp_path):
    Image.fromarray(digit()).save(tmp_path / "d.png")
    line = assert_clean_failure(predict(tmp_path / "d.png", "--model", model_path, "--top", top),
                                "--top", "at least 1", repr(top))
    assert line.startswith("error: argument --top")


def test_top_beyond_the_classes_shows_them_all(model_path, tmp_path):
    Image.fromarray(digit()).save(tmp_path / "d.png")
    out = predict(tmp_path / "d.png", "--model", model_path, "--top", "50", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(t["class"] for t in json.loads(out.stdout)[0]["top"]) == [str(i) for i in range(10)]


# --- size bombs: refused from the header, under a capped address space ------------------------

@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    """Blank 1-bit PNGs, a few dozen KB each: one over Pillow's own bomb limit (its 400 MP would
    raise DecompressionBombError), one under it that would need 1.3 GB as float64; and one
    exactly at MAX_PIXELS with a 7 on it."""
    folder = tmp_path_factory.mktemp("bombs")
    for side in (20000, 13000):
        Image.new("1", (side, side)).save(folder / f"big{side}.png")
    width = 10000
    height = MAX_PIXELS // width
    largest = Image.new("1", (width, height), 1)
    ImageDraw.Draw(largest).line([(2500, 2000), (7500, 2000), (4500, height - 1000)], fill=0, width=300)
    largest.save(folder / "largest.png")
    return folder


@pytest.mark.parametrize("side", [20000, 13000])
def test_a_size_bomb_is_refused_before_decoding(side, bombs, model_path):
    out = predict(bombs / f"big{side}.png", "--model", model_path, memory=CAP)
    assert_clean_failure(out, f"big{side}.png: {side}x{side} pixels", f"over the limit of {MAX_PIXELS // 10 ** 6} MP")
    assert "DecompressionBomb" not in out.stderr


def test_the_largest_allowed_image_is_predicted_under_the_cap(bombs, model_path, tmp_path):
    Image.fromarray(digit()).save(tmp_path / "d.png")
    out = predict(tmp_path / "d.png", bombs / "largest.png", "--model", model_path, memory=CAP)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2


def test_pillow_bomb_errors_while_decoding_are_one_clean_error(monkeypatch, tmp_path):
    Image.fromarray(digit()).save(tmp_path / "d.png")

    def bomb(img, in_place=False):
        raise Image.DecompressionBombError("Image size (400000000 pixels) exceeds limit")

    monkeypatch.setattr(images_module.ImageOps, "exif_transpose", bomb)
    with pytest.raises(StageError, match="d.png: over Pillow's size limit"):
        read_pixels(tmp_path / "d.png")


# --- framed as the training digits are -------------------------------------------------------

def test_ink_frame_measures_where_the_training_digits_sit(digits):
    from nn.data import ink_frame

    bars = np.zeros((5, 28, 28), np.uint8)
    bars[:, 4:24, 12:16] = 255  # 20 px tall, its mass at 13.5
    bars[:, [4, 23], 12:16] = 20  # faint ends: below INK of the brightest, not part of the box
    assert ink_frame(bars) == {"extent": 18, "centre": [13.5, 13.5]}
    bars[:, 4:8, 12:16] = 0  # rows 8-22 bright and 23 faint now: 15 px tall, its mass lower
    mass_row = (255 * sum(range(8, 23)) + 20 * 23) / (255 * 15 + 20)
    assert ink_frame(bars) == {"extent": 15, "centre": [round(mass_row, 2), 13.5]}
    frame = ink_frame(digits[0])  # scikit-learn's 8x8 digits fill the frame's height
    assert frame["extent"] == 8 and np.allclose(frame["centre"], 3.5, atol=0.15), frame


def test_a_digit_is_framed_as_the_model_s_training_digits_are(tmp_path):
    """The same photo of a 7: MNIST's frame (20 px of 28, mass in the middle) by default; filling
    an 8x8 frame for a model of scikit-learn's digits - and never pushed out of the frame."""
    Image.fromarray(seven()).save(tmp_path / "7.png")
    for frame, rows in ((None, 20), ({"extent": 8, "centre": [3.5, 3.5]}, 8), ({"extent": 8, "centre": [0, 7]}, 8)):
        size = (28, 28) if frame is None else (8, 8)
        x = to_input(tmp_path / "7.png", size, frame)
        ink = np.nonzero(x.max(axis=1) > 40)[0]
        assert x.shape == size and ink[-1] - ink[0] + 1 == rows, (frame, x)
        assert x[:, -1].max() > 0 if frame and frame["centre"][1] == 7 else True  # pushed right, but all there


def test_a_model_of_8x8_digits_reads_them_back_from_image_files(digits, tmp_path):
    """A model of scikit-learn's digits, given its own test digits as dark-on-light 64x64 PNGs, answers
    about as well as on the arrays (framed MNIST's way it fell to a quarter right)."""
    from nn.data import ink_frame
    from nn.optim import OPTIMIZERS, Cosine
    from nn.train import FitOptions, fit

    x_train, x_test, y_train, y_test = digits
    spec = mlp_spec((8, 8), [64])
    spec.update(normalize={"mean": float(x_train.mean()), "std": float(x_train.std())}, ink=ink_frame(x_train))
    model = Sequential(spec)
    rng = np.random.default_rng(0)
    model.init_params(rng)
    opt = OPTIMIZERS["adam"](model.params_flat, model.grads_flat, n_decayed=model.n_decayed)
    fit(model, opt, Cosine(0.01, 15 * 43), x_train, y_train, x_test, y_test, FitOptions(epochs=15, batch_size=32), rng)
    direct = (model.predict(x_test) == y_test).mean()
    inputs = []
    for i, img in enumerate(x_test[:150]):
        Image.fromarray(255 - img).resize((64, 64), Image.Resampling.NEAREST).save(tmp_path / f"{i}.png")
        inputs.append(to_input(tmp_path / f"{i}.png", (8, 8), spec["ink"]))
    read_back = (model.predict(np.stack(inputs)) == y_test[:150]).mean()
    assert direct >= 0.95 and read_back >= direct - 0.05, (direct, read_back)


def test_a_folder_and_a_file_name_with_a_newline_get_one_whole_line(tmp_path):
    """A folder is told to pass its files; a name with a newline in it is printed with \\n, not cut
    at it (the line said only `error: .../bad`)."""
    from harness.errors import StageError, one_line
    from sources.images import open_image

    with pytest.raises(StageError, match=r"a folder; pass the image files in it"):
        open_image(tmp_path)
    bad = tmp_path / "bad\nname.png"
    bad.write_bytes(b"junk")
    with pytest.raises(StageError) as info:
        open_image(bad)
    assert one_line(str(info.value)).startswith(f"{tmp_path}/bad\\nname.png: not an image")
    assert "\n" not in one_line(str(info.value))


def test_the_handwriting_commands_as_written(tmp_path):
    """docs/own-data.md's predict commands, as written, where the page's files exist: a model
    trained on the digits, and my_digit.png and another.jpg drawn beside it. One line per image,
    its three most likely classes; --json gives the same answers for a program."""
    from tests.docs import section_commands
    from tests.project import DIGITS, Project

    project = Project(tmp_path / "p", DIGITS)
    for stage in ("fetch", "prepare", "train"):
        assert project.stage(stage).returncode == 0
    Image.fromarray(seven()).save(project.path / "my_digit.png")
    Image.fromarray(seven(ink=30, paper=220)).convert("RGB").save(project.path / "another.jpg")
    plain, as_json = section_commands("docs/own-data.md", "## Try it on your own handwriting")
    lines = project.run("bash", "-c", plain).stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["my_digit.png", "another.jpg"], lines
    assert all(re.fullmatch(r"[\w.]+: (\d \(\d\.\d{3}\), ){2}\d \(\d\.\d{3}\)", line) for line in lines), lines
    answers = json.loads(project.run("bash", "-c", as_json).stdout)
    assert [a["image"] for a in answers] == ["my_digit.png"] and len(answers[0]["top"]) == 3
    assert lines[0].startswith(f"my_digit.png: {answers[0]['top'][0]['class']} (")
