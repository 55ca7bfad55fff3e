import json

import numpy as np
import pytest

from detector.serving.decoding import DecodeLimits, decode_body, media_type
from detector.serving.request_errors import BadRequest, PayloadTooLarge, UnsupportedContentType
import sample_images as samples

LIMITS = DecodeLimits(max_image_pixels=1_000_000, max_batch_images=4, max_payload_bytes=6 * 1024 * 1024)


def decode_one(body, content_type):
    decoded = decode_body(body, content_type, LIMITS)
    assert not decoded.batch and len(decoded.images) == 1
    image = decoded.images[0]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    return image


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg", "application/x-image", "IMAGE/PNG; q=1"])
def test_raw_png_is_decoded_exactly(content_type):
    image = decode_one(samples.png(96, 64), content_type)
    np.testing.assert_array_equal(image, samples.rgb_array(96, 64))


def test_jpeg_keeps_its_size_and_colours():
    image = decode_one(samples.jpeg(96, 64), "image/jpeg")
    assert image.shape == (64, 96, 3)
    red_block = image[20:28, 28:44].reshape(-1, 3).mean(axis=0)
    assert np.abs(red_block - (250, 30, 30)).max() < 40


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "I;16"])
def test_other_modes_become_rgb(mode):
    data = samples.encode(samples.Image.fromarray(samples.rgb_array(40, 30)).convert(mode), "TIFF")
    assert decode_one(data, "application/x-image").shape == (30, 40, 3)


def test_grayscale_is_replicated_to_three_channels():
    image = decode_one(samples.png(40, 30, mode="L"), "image/png")
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_exif_orientation_is_applied():
    assert decode_one(samples.exif_rotated_jpeg(96, 64), "image/jpeg").shape == (96, 64, 3)


def test_json_single_image():
    image = decode_one(samples.json_single(samples.png(20, 10)), "application/json")
    assert image.shape == (10, 20, 3)


def test_json_base64_may_be_wrapped_over_lines():
    encoded = samples.b64(samples.png(20, 10))
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    body = json.dumps({"image": wrapped}).encode()
    assert decode_one(body, "application/json").shape == (10, 20, 3)


def test_json_batch_keeps_order():
    decoded = decode_body(samples.json_batch(samples.png(20, 10), samples.jpeg(30, 40)), "application/json; charset=utf-8", LIMITS)
    assert decoded.batch
    assert [i.shape for i in decoded.images] == [(10, 20, 3), (40, 30, 3)]


def test_npy_array():
    array = samples.rgb_array(12, 8)
    np.testing.assert_array_equal(decode_one(samples.npy(array), "application/x-npy"), array)


def test_fortran_ordered_npy_array():
    array = np.asfortranarray(samples.rgb_array(12, 8))
    np.testing.assert_array_equal(decode_one(samples.npy(array), "application/x-npy"), array)


def test_media_type():
    assert media_type(" Application/JSON ; charset=utf-8") == "application/json"
    assert media_type(None) == ""


def rejected(body, content_type, limits=LIMITS, error=BadRequest):
    with pytest.raises(error) as info:
        decode_body(body, content_type, limits)
    assert info.value.status == {BadRequest: 400, PayloadTooLarge: 413, UnsupportedContentType: 415}[error]
    return info.value.message


@pytest.mark.parametrize("content_type", ["text/csv", "application/octet-stream", None, "image/gif"])
def test_unsupported_content_type_is_415(content_type):
    assert "use one of image/jpeg, image/png, application/x-image, application/json, application/x-npy" in rejected(
        b"x", content_type, error=UnsupportedContentType
    )


@pytest.mark.parametrize("content_type", ["image/png", "application/json", "application/x-npy"])
def test_empty_body(content_type):
    assert "request body is empty" in rejected(b"", content_type)


def test_payload_above_the_limit_is_413():
    limits = DecodeLimits(max_payload_bytes=100)
    assert "above the limit of 100" in rejected(samples.png(64, 64), "image/png", limits, PayloadTooLarge)


def test_undecodable_image():
    assert "not an image Pillow can decode" in rejected(b"GIF89a not really", "image/png")


def test_truncated_image():
    assert "cannot be decoded" in rejected(samples.png(200, 200)[:300], "image/png")


def test_image_above_the_pixel_limit_is_rejected_before_decoding():
    limits = DecodeLimits(max_image_pixels=50 * 50)
    message = rejected(samples.png(60, 50), "image/png", limits)
    assert "60x50 = 3000 pixels, above the limit of 2500 (DETECTOR_MAX_IMAGE_PIXELS)" in message


def test_small_file_with_many_pixels_is_rejected_by_its_header():
    # A 1-bit PNG of 3000 x 3000 pixels compresses to a few kilobytes.
    bomb = samples.encode(samples.Image.new("1", (3000, 3000)), "PNG")
    assert len(bomb) < 10_000
    assert "3000x3000 = 9000000 pixels, above the limit of 1000000" in rejected(bomb, "image/png")


def test_decompression_bomb_is_rejected_by_pillow_even_with_a_high_limit():
    bomb = samples.encode(samples.Image.new("1", (30000, 30000)), "PNG")
    limits = DecodeLimits(max_image_pixels=10**10)
    assert "rejected as a decompression bomb" in rejected(bomb, "image/png", limits)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "request body is not valid JSON"),
        (b'{"image": "\xff"}', "not UTF-8 encoded JSON"),
        (b"[1, 2]", 'expected {"image": "<base64>"} or {"instances"'),
        (b'{"images": "x"}', 'expected {"image": "<base64>"} or {"instances"'),
        (b'{"image": "x", "instances": []}', 'expected {"image": "<base64>"} or {"instances"'),
        (b'{"image": 5}', "image: expected a base64 string, got int"),
        (b'{"image": "***"}', "image: not valid base64"),
        (b'{"instances": []}', '"instances" must be a non-empty list'),
        (b'{"instances": {"image": "x"}}', '"instances" must be a non-empty list'),
    ],
)
def test_malformed_json(body, message):
    assert message in rejected(body, "application/json")


def test_batch_names_the_bad_instance():
    good = samples.b64(samples.png(8, 8))
    body = json.dumps({"instances": [{"image": good}, {"image": good}, {"image": "!!notbase64"}]}).encode()
    assert rejected(body, "application/json").startswith("instances[2].image: not valid base64")
    body = json.dumps({"instances": [{"image": good}, {"image": samples.b64(b"not an image")}]}).encode()
    assert rejected(body, "application/json").startswith("instances[1].image: image is not an image Pillow can decode")
    body = json.dumps({"instances": [{"image": good}, "just a string"]}).encode()
    assert rejected(body, "application/json").startswith('instances[1]: expected an object {"image": "<base64>"}')


def test_batch_above_the_image_limit():
    body = samples.json_batch(*[samples.png(8, 8)] * 5)
    assert "5 instances, above the limit of 4 images per request (DETECTOR_MAX_BATCH_IMAGES)" in rejected(body, "application/json")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((8, 8), np.uint8), "shape (8, 8) and dtype uint8; expected HxWx3 uint8"),
        (np.zeros((8, 8, 4), np.uint8), "shape (8, 8, 4)"),
        (np.zeros((8, 8, 3), np.float32), "dtype float32"),
        (np.zeros((0, 8, 3), np.uint8), "shape (0, 8, 3)"),
    ],
)
def test_npy_with_wrong_shape_or_dtype(array, message):
    assert message in rejected(samples.npy(array), "application/x-npy")


def test_npy_pickles_are_refused():
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "not a .npy array" in rejected(buffer.getvalue(), "application/x-npy")


def test_npy_garbage():
    assert "not a .npy array" in rejected(b"\x93NUMPY garbage", "application/x-npy")


def test_npy_above_the_pixel_limit():
    limits = DecodeLimits(max_image_pixels=10)
    assert "npy array is 4x3 = 12 pixels" in rejected(samples.npy(np.zeros((3, 4, 3), np.uint8)), "application/x-npy", limits)


def solid_png(width: int, height: int) -> bytes:
    """A PNG of one colour: a few hundred bytes however many pixels it holds."""
    return samples.encode(samples.Image.new("RGB", (width, height), (10, 200, 30)), "PNG")


def test_a_request_above_the_pixel_budget_is_413_before_the_image_that_crosses_it_is_decoded():
    limits = DecodeLimits(max_image_pixels=1_000_000, max_batch_images=32, max_request_pixels=2_500_000)
    body = samples.json_batch(*[solid_png(1000, 1000)] * 3)
    assert len(body) < 30_000  # a small body that decodes to 3 million pixels
    with pytest.raises(PayloadTooLarge) as error:
        decode_body(body, "application/json", limits)
    assert error.value.status == 413
    assert error.value.message == (
        "instances[2].image: image (1000x1000) takes the request to 3000000 decoded pixels, above the limit of "
        "2500000 pixels per request (DETECTOR_MAX_REQUEST_PIXELS); send fewer or smaller images"
    )
    assert len(decode_body(samples.json_batch(*[solid_png(1000, 1000)] * 2), "application/json", limits).images) == 2


def test_one_image_above_the_pixel_budget_is_413():
    limits = DecodeLimits(max_image_pixels=1_000_000, max_request_pixels=500_000)
    with pytest.raises(PayloadTooLarge, match="takes the request to 640000 decoded pixels"):
        decode_body(solid_png(800, 800), "image/png", limits)


def test_json_lines_records_keep_their_line_numbers_and_bad_lines_their_reason():
    from detector.serving.decoding import decode_json_line

    good = samples.b64(samples.png(20, 10))
    body = "\n".join([json.dumps({"image": good}), "", "{oops", json.dumps({"picture": good}), json.dumps({"image": "%%"}),
                      json.dumps({"image": good})]).encode() + b"\n"
    decoded = decode_body(body, "application/jsonlines", LIMITS)
    assert decoded.images == [] and decoded.batch
    lines = decoded.lines
    assert [r.line for r in lines] == [1, 3, 4, 5, 6]  # the blank line 2 is no record
    assert lines[1].error.startswith("line 3: not valid JSON") and lines[2].error == 'line 4: expected {"image": "<base64>"}'
    assert decode_json_line(lines[0], LIMITS).shape == (10, 20, 3)
    with pytest.raises(BadRequest, match=r"^line 5: not valid base64"):
        decode_json_line(lines[3], LIMITS)
    with pytest.raises(PayloadTooLarge, match="line 6: image \\(20x10\\) takes the request to 400 decoded pixels"):
        decode_json_line(lines[4], DecodeLimits(max_request_pixels=300), pixels_before=200)


@pytest.mark.parametrize("body, message", [(b"\n \n", "JSON Lines body has no records"), (b"\xff\n", "JSON Lines body is not UTF-8")])
def test_json_lines_body_without_records_is_refused(body, message):
    assert message in rejected(body, "application/x-jsonlines")


def test_large_images_pass_when_the_limit_is_raised_above_pillows_default():
    """Pillow refuses more than ~89 Mpx by default; a raised limit (batch mode) is honoured up to the ceiling,
    and Pillow's default is left as it was."""
    from PIL import Image

    default = Image.MAX_IMAGE_PIXELS
    big = samples.encode(samples.Image.new("1", (10000, 10000)), "PNG")
    assert "rejected as a decompression bomb" in rejected(big, "image/png", DecodeLimits(max_image_pixels=40_000_000))
    image = decode_body(big, "image/png", DecodeLimits(max_image_pixels=150_000_000)).images[0]
    assert image.shape == (10000, 10000, 3)
    assert Image.MAX_IMAGE_PIXELS == default
