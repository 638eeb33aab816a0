"""Request decoding and response encoding as the Hugging Face inference toolkit 2.6.0 does them:
`decode(content, content_type)` and `encode(content, accept_type)` by MIME type, JSON and CSV
(a header row naming question/context, or inputs), NPY, and images and audio as raw inputs.
Errors are this image's: an unsupported type is a 415, a malformed body a 400."""

from __future__ import annotations

import base64
import csv
import datetime
import json
from io import BytesIO, StringIO

import numpy as np

from qa.errors import InvalidRequest, UnsupportedAccept, UnsupportedContentType
from sagemaker_huggingface_inference_toolkit import content_types

CSV_HEADERS = ("question", "context", "inputs")


def decode_json(content):
    try:
        return json.loads(content)
    except ValueError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc


def decode_csv(string_like):
    """CSV with a header row -> {"inputs": [row dicts]}, or {"inputs": [values]} for an inputs column."""
    if isinstance(string_like, bytes):
        string_like = string_like.decode("utf-8")
    lines = string_like.splitlines()
    if not lines or not any(header in lines[0].lower() for header in CSV_HEADERS):
        raise InvalidRequest(
            "You need to provide the correct CSV with Header columns to use it with the inference toolkit "
            "default handler."
        )
    rows = list(csv.DictReader(StringIO(string_like)))
    if rows and "inputs" in rows[0]:
        return {"inputs": [row["inputs"] for row in rows]}
    return {"inputs": rows}


def decode_npy(content):
    return np.load(BytesIO(content), allow_pickle=False)


def decode_image(payload):
    from PIL import Image

    return {"inputs": Image.open(BytesIO(payload)).convert("RGB")}


def decode_audio(payload):
    return {"inputs": bytes(payload)}


class _JSONEncoder(json.JSONEncoder):
    """numpy numbers and arrays, datetimes and images, as the toolkit encodes them."""

    def default(self, obj):
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        if hasattr(obj, "tolist"):
            return obj.tolist()
        if isinstance(obj, datetime.datetime):
            return str(obj)
        if hasattr(obj, "save") and hasattr(obj, "getbands"):  # a PIL image
            with BytesIO() as out:
                obj.save(out, format="PNG")
                return base64.b64encode(out.getvalue()).decode("utf-8")
        return super().default(obj)


def encode_json(content, accept_type=None):
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, cls=_JSONEncoder, separators=(",", ":")
    )


def encode_npy(array_like, accept_type=None):
    buffer = BytesIO()
    np.save(buffer, array_like)
    return buffer.getvalue()


def encode_csv(content, accept_type=None):
    """A list of dicts (a pipeline's answers) -> CSV with their keys as the header."""
    stream = StringIO()
    rows = content if isinstance(content, list) else [content]
    writer = csv.DictWriter(stream, rows[0].keys())
    writer.writeheader()
    writer.writerows(rows)
    return stream.getvalue()


def encode_image(image, accept_type=content_types.PNG):
    image_format = "PNG" if accept_type == content_types.X_IMAGE else accept_type.split("/")[-1].upper()
    with BytesIO() as out:
        image.save(out, format=image_format)
        return out.getvalue()


_DECODERS = {
    content_types.JSON: decode_json,
    content_types.CSV: decode_csv,
    content_types.NPY: decode_npy,
    **dict.fromkeys(content_types.VISION_TYPES, decode_image),
    **dict.fromkeys(content_types.AUDIO_TYPES, decode_audio),
}
_ENCODERS = {
    content_types.JSON: encode_json,
    content_types.CSV: encode_csv,
    content_types.NPY: encode_npy,
    **dict.fromkeys(content_types.VISION_TYPES, encode_image),
}


def decode(content, content_type=content_types.JSON):
    """The request body as the toolkit's default input_fn decodes it."""
    decoder = _DECODERS.get(content_type)
    if decoder is None:
        raise UnsupportedContentType(
            f"Content type {content_type} is not supported by the toolkit's decoder: "
            f"{', '.join(_DECODERS)}; implement input_fn to decode it"
        )
    return decoder(content)


def encode(content, accept_type=content_types.JSON):
    """The prediction as the toolkit's default output_fn encodes it."""
    encoder = _ENCODERS.get(accept_type)
    if encoder is None:
        raise UnsupportedAccept(
            f"Accept type {accept_type} is not supported by the toolkit's encoder: "
            f"{', '.join(_ENCODERS)}; implement output_fn to encode it"
        )
    return encoder(content, accept_type)
