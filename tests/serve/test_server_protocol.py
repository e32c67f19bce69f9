"""The OIP request parser and response encoder: round trips, one clear error per problem, and fuzzing."""

from __future__ import annotations

import gzip
import json
import math
import warnings
import zlib
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tailor.serve.server.protocol import (
    HEADER_LENGTH,
    InferRequest,
    ModelSpec,
    ProtocolError,
    TensorSpec,
    decode_content,
    decode_infer_response,
    encode_infer_request,
    encode_infer_response,
    parse_infer_request,
    request_deadline_ms,
)

SPEC = ModelSpec("m", TensorSpec("input", "FP32", (-1, 3, 4, 4)), TensorSpec("logits", "FP32", (-1, 5)), 8)
FINITE = st.floats(allow_nan=False, allow_infinity=False, width=32)


def _parse(body: bytes, headers: dict[str, str]) -> InferRequest:
    return parse_infer_request(body, SPEC, headers.get(HEADER_LENGTH))


def _request(data: Any = None, drop: tuple[str, ...] = (), **changes: Any) -> bytes:
    tensor = {"name": "input", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [0.5] * 48 if data is None else data}
    tensor.update(changes)
    for key in drop:
        del tensor[key]
    return json.dumps({"inputs": [tensor]}).encode()


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 8), st.just(3), st.just(4), st.just(4)), elements=FINITE),
       st.booleans(), st.one_of(st.none(), st.floats(0.01, 1e6)))
def test_requests_round_trip_in_json_and_binary(x: np.ndarray, binary: bool, deadline: float | None) -> None:
    body, headers = encode_infer_request(x, SPEC, binary=binary, deadline_ms=deadline, request_id="7")
    parsed = _parse(body, headers)
    np.testing.assert_array_equal(parsed.inputs, x)
    assert parsed.inputs.dtype == np.float32 and parsed.inputs.flags.c_contiguous
    assert parsed.deadline_ms == deadline and parsed.id == "7" and parsed.binary_output is True


@settings(max_examples=80, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 4), st.just(3), st.just(4), st.just(4)),
              elements=st.floats(width=32) | st.sampled_from([np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, 1e20])))
def test_binary_inputs_are_refused_exactly_when_a_value_is_not_finite(x: np.ndarray) -> None:
    """Any mix of NaN, +inf, -inf and values whose squares overflow: the first non-finite element is named, finite
    inputs pass unchanged, and no floating-point warning escapes (a sum of +inf and -inf used to emit one)."""
    body, headers = encode_infer_request(x, SPEC)
    flat = x.reshape(-1)
    bad = np.flatnonzero(~np.isfinite(flat))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if len(bad):
            with pytest.raises(ProtocolError, match=rf"element {bad[0]} \(row-major\) is ") as info:
                _parse(body, headers)
            assert info.value.status == 400
            assert ("NaN" in info.value.message) == bool(np.isnan(flat[bad[0]]))
        else:
            np.testing.assert_array_equal(_parse(body, headers).inputs, x)


def test_nested_json_data_equals_flat() -> None:
    x = np.arange(2 * 48, dtype=np.float32).reshape(2, 3, 4, 4) / 7
    flat = json.dumps({"inputs": [{"name": "input", "shape": [2, 3, 4, 4], "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]}).encode()
    nested = json.dumps({"inputs": [{"name": "input", "shape": [2, 3, 4, 4], "datatype": "FP32",
                                     "data": x.tolist()}]}).encode()
    np.testing.assert_array_equal(parse_infer_request(flat, SPEC).inputs, x)
    np.testing.assert_array_equal(parse_infer_request(nested, SPEC).inputs, x)


@pytest.mark.parametrize(
    ("body", "header", "status", "message"),
    [
        (b"", None, 400, "the request body is empty"),
        (b'{"inputs": [', None, 400, "malformed JSON: Expecting value at line 1 column 13"),
        (b"\xff\xfe{}", None, 400, "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, None, 400, "malformed JSON"),
        (b'"text"', None, 400, "request: expected a JSON object, got a string"),
        (b'{"inputs": [], "extra": 1}', None, 400, "unknown field(s) ['extra']"),
        (b'{"inputs": []}', None, 400, "inputs: expected a non-empty array with input 'input'"),
        (_request(name="image"), None, 400, "no input 'image'; its input is 'input'"),
        (_request(datatype="FP64"), None, 400, "datatype 'FP64' is not accepted; expected one of ['FP16', 'FP32']"),
        (_request(datatype=["FP32"]), None, 400, "datatype ['FP32'] (not an OIP datatype)"),
        (_request(datatype="FLOAT"), None, 400, "'FLOAT' (not an OIP datatype)"),
        (_request(shape=[1, 3, 4]), None, 400, "shape: expected [N, 3, 4, 4]"),
        (_request(shape=[1, 3, 4, 5]), None, 400, "shape: expected [N, 3, 4, 4]"),
        (_request(shape=[0, 3, 4, 4]), None, 400, "batch dimension 0 is outside 1..8"),
        (_request(shape=[True, 3, 4, 4]), None, 400, "shape: expected a list of integers"),
        (_request(data=[0.5] * 47), None, 400, "47 values; shape [1, 3, 4, 4] needs 48"),
        (_request(data=[0.5] * 47 + ["1"]), None, 400, "element 47 is a string, expected a number"),
        (_request(data=[0.5] * 47 + [True]), None, 400, "element 47 is a boolean"),
        (_request(data=[[0.5] * 48]), None, 400, "dimension 1 has 48 elements, the shape says 3"),
        (_request(data=[0.5] * 47 + [10**400]), None, 400, "too large for FP32"),
        (_request(data=[0.5] * 47 + [1e300]), None, 400, "infinite value (or one too large for its datatype)"),
        (_request(datatype="FP16", data=[0.5] * 47 + [70000.0]), None, 400, "element 47 (row-major) is an infinite"),
        (_request(data=[0.5] * 10 + [float("nan")] + [0.5] * 37), None, 400, "element 10 (row-major) is NaN"),
        (_request(drop=("data",), parameters={"binary_data_size": 192}), None, 400, "header is missing"),
        (_request(drop=("data",)), None, 400, "no 'data' and no parameters.binary_data_size"),
        (_request(data=[0.5] * 48, parameters={"binary_data_size": 192}), None, 400, "has both 'data'"),
        (b'{"inputs": [{"name": "input"}]}', "1000", 400, "but the body has only"),
        (b'{"inputs": []}', "-3", 400, "expected a non-negative integer"),
    ],
)
def test_each_problem_gets_a_4xx_naming_it(body: bytes, header: str | None, status: int, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_infer_request(body, SPEC, header)
    assert info.value.status == status
    assert message in info.value.message


def test_request_parameters_are_checked() -> None:
    def with_params(**params: Any) -> bytes:
        tensor = {"name": "input", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [0.0] * 48}
        return json.dumps({"inputs": [tensor], "parameters": params}).encode()

    assert parse_infer_request(with_params(deadline_ms=12.5), SPEC).deadline_ms == 12.5
    assert parse_infer_request(with_params(timeout=2500), SPEC).deadline_ms == 2.5  # Triton: microseconds
    assert parse_infer_request(with_params(priority=3), SPEC).deadline_ms is None  # other parameters pass
    for bad, message in [({"deadline_ms": -1}, "parameters.deadline_ms"), ({"deadline_ms": "5"}, "deadline_ms"),
                         ({"timeout": 1.5}, "parameters.timeout"), ({"binary_data_output": "yes"}, "true or false")]:
        with pytest.raises(ProtocolError, match=message):
            parse_infer_request(with_params(**bad), SPEC)


def test_binary_tensors_are_checked_against_their_declared_size() -> None:
    x = np.ones((2, 3, 4, 4), np.float32)
    body, headers = encode_infer_request(x, SPEC)
    length = headers[HEADER_LENGTH]
    with pytest.raises(ProtocolError, match="carries 380 bytes of binary data, binary_data_size says 384"):
        parse_infer_request(body[:-4], SPEC, length)
    with pytest.raises(ProtocolError, match="bytes follow the JSON header"):
        json_body, _ = encode_infer_request(x, SPEC, binary=False)
        parse_infer_request(json_body + b"junk", SPEC, str(len(json_body)))
    x[1, 2, 3, 3] = np.nan
    body, headers = encode_infer_request(x, SPEC)
    with pytest.raises(ProtocolError, match="element 95 .* is NaN"):
        parse_infer_request(body, SPEC, headers[HEADER_LENGTH])


def test_content_encodings_are_bounded() -> None:
    payload = b"x" * 5000
    assert decode_content(gzip.compress(payload), "gzip", 10_000) == payload
    assert decode_content(zlib.compress(payload), "deflate", 10_000) == payload
    assert decode_content(payload, None, 10_000) == payload
    with pytest.raises(ProtocolError, match="inflates to more than the limit of 4999 bytes") as info:
        decode_content(gzip.compress(payload), "gzip", 4999)
    assert info.value.status == 413
    with pytest.raises(ProtocolError, match="not valid gzip"):
        decode_content(b"not gzip at all", "gzip", 10_000)
    with pytest.raises(ProtocolError, match="truncated gzip"):
        decode_content(gzip.compress(payload)[:-12], "gzip", 10_000)
    with pytest.raises(ProtocolError) as info:
        decode_content(payload, "br", 10_000)
    assert info.value.status == 415


@pytest.mark.parametrize("binary", [True, False])
def test_responses_decode_with_tritonclient(binary: bool) -> None:
    outputs = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    request = InferRequest(np.zeros((3, 3, 4, 4), np.float32), id="abc", binary_output=binary)
    body, headers = encode_infer_response(SPEC, request, outputs, {"subnet": "s1", "on_time": True})
    header_length = headers.get(HEADER_LENGTH.lower())
    assert (header_length is not None) == binary
    result = triton.InferResult.from_response_body(body, header_length=None if header_length is None
                                                   else int(header_length))
    np.testing.assert_array_equal(result.as_numpy("logits"), outputs)
    assert result.get_response()["parameters"] == {"subnet": "s1", "on_time": True}
    assert result.get_response()["id"] == "abc"
    response, array = decode_infer_response(body, header_length)
    assert response["parameters"]["subnet"] == "s1"
    np.testing.assert_array_equal(array, outputs)


# -- fuzzing ------------------------------------------------------------------------------------------------


def _check_outcome(body: bytes, header: str | None) -> None:
    """The parser either returns a valid request or raises ProtocolError (4xx) — nothing else, ever."""
    try:
        parsed = parse_infer_request(body, SPEC, header)
    except ProtocolError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    x = parsed.inputs
    assert x.dtype == np.float32 and x.shape[1:] == (3, 4, 4) and 1 <= x.shape[0] <= 8
    assert np.isfinite(x).all()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.one_of(st.none(), st.integers(-5, 700).map(str), st.text(max_size=5)))
def test_fuzz_arbitrary_bytes(body: bytes, header: str | None) -> None:
    _check_outcome(body, header)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(
        st.sampled_from(["name", "shape", "datatype", "data", "parameters", "inputs", "outputs", "id",
                         "binary_data_size", "deadline_ms", "timeout", "binary_data", "x"]), inner, max_size=6),
    max_leaves=40,
)


@settings(max_examples=150, deadline=None)
@given(JSON)
def test_fuzz_arbitrary_json(value: Any) -> None:
    _check_outcome(json.dumps(value).encode(), None)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list) and len(value) <= 8:
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


@settings(max_examples=200, deadline=None)
@given(st.data(), st.booleans())
def test_fuzz_mutated_valid_requests(data: st.DataObject, binary: bool) -> None:
    x = np.full((2, 3, 4, 4), 0.25, np.float32)
    body, headers = encode_infer_request(x, SPEC, binary=binary, deadline_ms=40.0)
    length = int(headers.get(HEADER_LENGTH, len(body)))
    request = json.loads(body[:length])
    tail = body[length:]
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(request)[1:]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = request
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON)
        if not isinstance(request, dict):
            break
    text = json.dumps(request).encode()
    cut = data.draw(st.integers(0, len(tail)))
    header = str(len(text)) if binary else data.draw(st.one_of(st.none(), st.just(str(len(text)))))
    _check_outcome(text + tail[:cut], header)


def test_a_non_finite_value_anywhere_is_found() -> None:
    for index in (0, 17, 47):
        data = [1.0] * 48
        data[index] = math.inf
        with pytest.raises(ProtocolError, match=f"element {index} "):
            parse_infer_request(_request(data=data), SPEC)


def test_numbers_python_cannot_convert_or_represent_are_400s() -> None:
    huge = _request(data=[0.5] * 47 + [7]).replace(b"7]", b"9" * 5000 + b"]")  # over sys.int_info's 4300 digits
    with pytest.raises(ProtocolError, match="malformed JSON: Exceeds the limit") as info:
        parse_infer_request(huge, SPEC)
    assert info.value.status == 400
    tensor = {"name": "input", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [0.0] * 48}
    for deadline, message in ((b"1e400", "expected a positive number"), (b"1e13", "longer than the 1e12 ms")):
        body = json.dumps({"inputs": [tensor], "parameters": {"deadline_ms": 1}}).encode().replace(
            b'"deadline_ms": 1', b'"deadline_ms": ' + deadline)
        with pytest.raises(ProtocolError, match=message):
            parse_infer_request(body, SPEC)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float16, st.tuples(st.integers(1, 8), st.just(3), st.just(4), st.just(4)),
              elements=st.floats(-1000, 1000, width=16)), st.booleans())
def test_fp16_inputs_are_accepted_in_json_and_binary(x: np.ndarray, binary: bool) -> None:
    tensor: dict[str, Any] = {"name": "input", "shape": list(x.shape), "datatype": "FP16"}
    if binary:
        raw = x.astype("<f2").tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
        text = json.dumps({"inputs": [tensor]}).encode()
        parsed = parse_infer_request(text + raw, SPEC, str(len(text)))
    else:
        tensor["data"] = x.astype(np.float32).reshape(-1).tolist()
        parsed = parse_infer_request(json.dumps({"inputs": [tensor]}).encode(), SPEC)
    assert parsed.inputs.dtype == np.float32
    np.testing.assert_array_equal(parsed.inputs, x.astype(np.float32))


def test_classification_extension_returns_the_top_classes() -> None:
    spec = ModelSpec("m", TensorSpec("input", "FP32", (-1, 3, 4, 4)), TensorSpec("logits", "FP32", (-1, 5)), 8)
    x = np.zeros((2, 3, 4, 4), np.float32)
    for binary in (False, True):
        body, headers = encode_infer_request(x, spec, binary=binary, binary_output=binary)
        request = json.loads(body[: int(headers.get(HEADER_LENGTH, len(body)))])
        request["outputs"] = [{"name": "logits", "parameters": {"classification": 2, "binary_data": binary}}]
        text = json.dumps(request).encode()
        parsed = parse_infer_request(text + body[int(headers.get(HEADER_LENGTH, len(body))):], spec,
                                     str(len(text)) if binary else None)
        assert parsed.classification == 2
        logits = np.array([[0.1, 3.0, -1.0, 2.5, 0.0], [9.0, 1.0, 1.0, 1.0, 8.5]], np.float32)
        out, out_headers = encode_infer_response(spec, parsed, logits, {})
        length = int(out_headers.get(HEADER_LENGTH.lower(), len(out)))
        response = json.loads(out[:length])
        tensor = response["outputs"][0]
        assert tensor["datatype"] == "BYTES" and tensor["shape"] == [2, 2]
        if binary:
            blob, items = out[length:], []
            while blob:
                size = int.from_bytes(blob[:4], "little")
                items.append(blob[4 : 4 + size].decode())
                blob = blob[4 + size :]
        else:
            items = tensor["data"]
        assert items == ["3:1", "2.5:3", "9:0", "8.5:4"]
    bad = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [0.0] * 48}],
                      "outputs": [{"name": "logits", "parameters": {"classification": 6}}]}).encode()
    with pytest.raises(ProtocolError, match=r"classification: expected an integer in 1..5"):
        parse_infer_request(bad, spec)


@given(st.lists(st.floats(width=32), min_size=1, max_size=64))
def test_an_fp32_tensor_is_accepted_exactly_when_every_value_is_finite(values: list[float]) -> None:
    """The one-pass check (a float64 sum) agrees with element-wise `isfinite`, at float32's extremes too
    (many values near 3.4e38 overflow a float32 sum, not a float64 one; inf + -inf is NaN)."""
    from tailor.serve.server.protocol import _finite_fp32

    array = np.asarray(values, dtype=np.float32)
    if np.isfinite(array).all():
        assert _finite_fp32(array, "x") is not None
    else:
        index = int(np.flatnonzero(~np.isfinite(array))[0])
        with pytest.raises(ProtocolError, match=f"element {index} "):
            _finite_fp32(array, "x")


DEADLINE_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**16), st.floats(allow_nan=True),
                            st.text(max_size=4), st.lists(st.integers(), max_size=2))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["deadline_ms", "timeout", "binary_data_output"]), DEADLINE_VALUES, max_size=3),
       st.booleans())
def test_a_requests_own_deadline_reads_as_the_full_parse_reads_it(parameters: dict[str, Any], binary: bool) -> None:
    """The server sheds on `request_deadline_ms` of the JSON part alone; it must agree with the full parse:
    the same deadline, or a 400 for the same reason."""
    x = np.zeros((1, 3, 4, 4), np.float32)
    body, headers = encode_infer_request(x, SPEC, binary=binary)
    length = int(headers.get(HEADER_LENGTH, len(body)))
    request = json.loads(body[:length])
    request["parameters"] = {**request.get("parameters", {}), **parameters}
    text = json.dumps(request).encode()
    headers = {HEADER_LENGTH: str(len(text))} if binary else {}
    body = text + body[length:]
    try:
        full: float | str | None = _parse(body, headers).deadline_ms
    except ProtocolError as exc:
        full = exc.message
    try:
        alone: float | str | None = request_deadline_ms(text)
    except ProtocolError as exc:
        alone = exc.message
    if isinstance(alone, str):  # the JSON part alone is wrong: so is the whole, for the same reason
        assert alone == full
    elif isinstance(full, str):  # what the whole has wrong is not the deadline
        assert "deadline_ms" not in full and "timeout" not in full
    else:
        assert alone == full
