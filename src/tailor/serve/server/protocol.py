"""The Open Inference Protocol (KServe v2 / Triton REST) on bytes: parse inference requests, encode answers.

No HTTP framework here: `parse_infer_request` takes the request body (and the value of the
`Inference-Header-Content-Length` header of the binary-tensor extension) and returns an `InferRequest`
or raises a `ProtocolError` whose HTTP status and message name the problem (wrong shape or datatype,
a non-finite value, malformed JSON, an unknown input, ...). `encode_infer_response` builds the answer in
JSON or, when the client asked for it, in the binary-tensor extension (a JSON header followed by raw
little-endian tensor bytes). Inputs may be FP32 or FP16 (converted to FP32); an output may ask for the
classification extension (`parameters.classification: K`: the top K classes as BYTES "score:index").
`ModelStatistics` keeps the counters of Triton's statistics extension. Written here rather than taken from
tritonclient, which is a client: it encodes requests and decodes answers, but parses no requests.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tailor.errors import TailorError

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ("binary_tensor_data", "classification", "statistics", "model_repository")
INPUT_DATATYPES = {"FP32": "<f4", "FP16": "<f2"}  # accepted input datatypes and their wire formats
# OIP tensor datatypes: the server accepts FP32 only; an error names any other (and says when it is not one of these).
DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BF16", "BYTES")
_REQUEST_KEYS = {"id", "inputs", "outputs", "parameters"}
_INPUT_KEYS = {"name", "shape", "datatype", "data", "parameters"}
_OUTPUT_KEYS = {"name", "parameters"}
_NUMBER_TYPES = (int, float)


class ProtocolError(TailorError, ValueError):
    """A request the server cannot accept; `status` is the HTTP status to answer with (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor of the model's signature; `shape` has -1 for the (variable) batch dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelSpec:
    """What the server serves under one name: the input it accepts, the output it returns, its batch limit."""

    name: str
    input: TensorSpec
    output: TensorSpec
    max_batch_size: int
    version: str = "1"
    platform: str = "tailor_supernet"
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.input.shape[1:]

    def metadata(self) -> dict[str, Any]:
        """The OIP model-metadata object (`GET /v2/models/{name}`)."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.platform,
            "inputs": [self.input.to_dict()],
            "outputs": [self.output.to_dict()],
        }

    def config(self) -> dict[str, Any]:
        """A Triton-style model configuration (`GET /v2/models/{name}/config`), for clients that ask for it."""
        return {
            "name": self.name,
            "platform": self.platform,
            "max_batch_size": self.max_batch_size,
            "input": [{"name": self.input.name, "data_type": "TYPE_" + self.input.datatype,
                       "dims": list(self.input.shape[1:])}],
            "output": [{"name": self.output.name, "data_type": "TYPE_" + self.output.datatype,
                        "dims": list(self.output.shape[1:])}],
            "dynamic_batching": {},
            "parameters": {k: {"string_value": str(v)} for k, v in self.parameters.items()},
        }


@dataclass
class InferRequest:
    """A parsed inference request: the input batch (float32, C-contiguous) and what the client asked for."""

    inputs: np.ndarray
    id: str | None = None
    deadline_ms: float | None = None
    binary_output: bool = False
    outputs: tuple[str, ...] = ()
    classification: int = 0  # top-K classes as BYTES "score:index" instead of the logits (0: logits)

    @property
    def samples(self) -> int:
        return int(self.inputs.shape[0])


def decode_content(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo a `Content-Encoding` (identity, gzip, deflate), refusing to inflate past `limit` bytes."""
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        return body
    if name not in ("gzip", "deflate"):
        raise ProtocolError(f"Content-Encoding {encoding!r} is not supported (identity, gzip, deflate)", 415)
    decoder = zlib.decompressobj(wbits=31 if name == "gzip" else 15)
    try:
        out = decoder.decompress(body, limit + 1)
        if len(out) > limit or decoder.unconsumed_tail:
            raise ProtocolError(f"request body inflates to more than the limit of {limit} bytes", 413)
        out += decoder.flush()
    except zlib.error as exc:
        raise ProtocolError(f"request body is not valid {name} data: {exc}") from None
    if not decoder.eof:
        raise ProtocolError(f"request body is truncated {name} data")
    if len(out) > limit:
        raise ProtocolError(f"request body inflates to more than the limit of {limit} bytes", 413)
    return out


def header_length(value: str | None, body_size: int) -> int | None:
    """The binary extension's JSON-header length from `Inference-Header-Content-Length` (None if absent)."""
    return _header_length(value, body_size)


DEADLINE_KEYS = (b"deadline_ms", b"timeout")  # the parameters by which a request sets its own deadline


def may_set_deadline(json_header: bytes | memoryview) -> bool:
    """Whether a request's JSON might carry its own deadline (`deadline_ms` or Triton's `timeout`): a byte
    search, so that a server can shed a request with the default deadline before parsing it."""
    raw = json_header if isinstance(json_header, bytes) else bytes(json_header)
    deadline_key, timeout_key = DEADLINE_KEYS
    return deadline_key in raw or timeout_key in raw


def request_deadline_ms(json_header: bytes | memoryview) -> float | None:
    """The deadline a request's JSON sets for itself (ms; None: the server's default), read as
    `parse_infer_request` reads it, without looking at its inputs: what a server needs to shed a request that
    carries its own deadline before parsing the rest. Raises `ProtocolError` as parsing the whole would."""
    if not bytes(json_header).strip():
        raise ProtocolError("malformed JSON: the request body is empty")
    request = _check_object(_load_json(json_header), "request", _REQUEST_KEYS)
    return _deadline(_check_object(request.get("parameters", {}), "parameters"))


def _header_length(value: str | None, body_size: int) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):  # str.isdigit alone accepts '¹' and other non-ASCII digits
        raise ProtocolError(f"header {HEADER_LENGTH}: expected a non-negative integer, got {value!r:.40}")
    length = int(text)
    if length > body_size:
        raise ProtocolError(f"header {HEADER_LENGTH} is {length} but the body has only {body_size} bytes")
    return length


def _load_json(text: bytes) -> Any:
    try:
        return json.loads(bytes(text).decode("utf-8"))  # JSON is UTF-8 (RFC 8259): no guessing UTF-16 from a BOM
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"malformed JSON: the request header is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ProtocolError("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts (sys.int_info)
        raise ProtocolError(f"malformed JSON: {str(exc)[:120]}") from None


def _bool_param(params: dict[str, Any], key: str, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"{where}.{key}: expected true or false, got {value!r:.40}")
    return value


def _check_object(value: Any, where: str, allowed: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected a JSON object, got {_json_type(value)}")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ProtocolError(f"{where}: unknown field(s) {unknown!r:.200} (allowed: {sorted(allowed)})")
    return value


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _deadline(params: dict[str, Any]) -> float | None:
    """`deadline_ms` (ours, milliseconds) or Triton's `timeout` (microseconds); the first given wins."""
    if "deadline_ms" in params:
        value = params["deadline_ms"]
        if isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES) or not math.isfinite(value) or value <= 0:
            raise ProtocolError(f"parameters.deadline_ms: expected a positive number of milliseconds, got {value!r:.40}")
        if value > 1e12:  # about 30 years: a longer deadline is a mistake, and would overflow clock arithmetic
            raise ProtocolError(f"parameters.deadline_ms: {value!r:.40} ms is longer than the 1e12 ms accepted")
        return float(value)
    if "timeout" in params:
        value = params["timeout"]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value > 10**15:
            raise ProtocolError(f"parameters.timeout: expected a positive integer of microseconds, got {value!r:.40}")
        return value / 1000.0
    return None


def _check_shape(value: Any, spec: ModelSpec, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or any(isinstance(d, bool) or not isinstance(d, int) for d in value):
        raise ProtocolError(f"{where}.shape: expected a list of integers, got {value!r:.80}")
    shape = tuple(value)
    expected = "[N, " + ", ".join(map(str, spec.sample_shape)) + "]"
    if len(shape) != len(spec.input.shape) or shape[1:] != spec.sample_shape:
        raise ProtocolError(f"{where}.shape: expected {expected} with 1 <= N <= {spec.max_batch_size}, got {list(shape)}")
    if not 1 <= shape[0] <= spec.max_batch_size:
        raise ProtocolError(
            f"{where}.shape: batch dimension {shape[0]} is outside 1..{spec.max_batch_size} (the largest batch served)"
        )
    return shape


def _flatten(data: list[Any], shape: tuple[int, ...], depth: int, out: list[Any], where: str) -> None:
    if len(data) != shape[depth]:
        raise ProtocolError(f"{where}.data: dimension {depth} has {len(data)} elements, the shape says {shape[depth]}")
    if depth == len(shape) - 1:
        out.extend(data)
        return
    for item in data:
        if not isinstance(item, list):
            raise ProtocolError(f"{where}.data: expected a nested array at depth {depth + 1}, got {_json_type(item)}")
        _flatten(item, shape, depth + 1, out, where)


def _json_tensor(data: Any, shape: tuple[int, ...], where: str, datatype: str = "FP32") -> np.ndarray:
    """JSON `data` (flat row-major or nested as the shape) -> float32 array; only numbers are accepted.

    FP16 values are rounded to half precision first (what the client declared), then widened."""
    if not isinstance(data, list):
        raise ProtocolError(f"{where}.data: expected an array of numbers, got {_json_type(data)}")
    count = math.prod(shape)
    flat: list[Any] = data
    if data and isinstance(data[0], list):  # nested as the shape
        flat = []
        _flatten(data, shape, 0, flat, where)
    elif len(data) != count:
        raise ProtocolError(f"{where}.data: {len(data)} values; shape {list(shape)} needs {count}")
    for index, value in enumerate(flat):
        kind = type(value)
        if kind is not float and kind is not int:
            raise ProtocolError(f"{where}.data: element {index} is {_json_type(value)}, expected a number ({datatype})")
    try:
        values = np.array(flat, dtype=np.float64)
    except OverflowError:
        raise ProtocolError(f"{where}.data: an integer is too large for {datatype}") from None
    if datatype == "FP16":
        with np.errstate(over="ignore"):
            values = values.astype(np.float16)
    return _finite_fp32(values.reshape(shape), where)


def _finite_fp32(values: np.ndarray, where: str) -> np.ndarray:
    if values.dtype == np.float32:  # the common case: no cast, so no errstate (a context manager costs microseconds)
        array = np.ascontiguousarray(values)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            array = np.ascontiguousarray(values, dtype=np.float32)
    # Every value is finite exactly when the largest and the smallest are (NaN propagates through both): two passes, no
    # temporary array of booleans, and no floating-point warning, where a float64 sum of +inf and -inf emits one
    flat = array.reshape(-1)
    if math.isfinite(float(flat.max())) and math.isfinite(float(flat.min())):
        return array
    index = int(np.flatnonzero(~np.isfinite(flat))[0])
    bad = float(flat[index])
    problem = "NaN" if math.isnan(bad) else "an infinite value (or one too large for its datatype)"
    raise ProtocolError(f"{where}: element {index} (row-major) is {problem}; inputs must be finite")


def parse_infer_request(body: bytes, spec: ModelSpec, header_length: str | None = None) -> InferRequest:
    """Parse and validate an OIP inference request body against `spec`; raise `ProtocolError` naming the problem."""
    json_length = _header_length(header_length, len(body))
    header = body if json_length is None else body[:json_length]
    binary = b"" if json_length is None else memoryview(body)[json_length:]
    if not header.strip():
        raise ProtocolError("malformed JSON: the request body is empty")
    request = _check_object(_load_json(header), "request", _REQUEST_KEYS)
    classification = 0
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"id: expected a string, got {_json_type(request_id)}")
    params = _check_object(request.get("parameters", {}), "parameters")
    deadline_ms = _deadline(params)
    binary_output = _bool_param(params, "binary_data_output", "parameters")

    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError(f"inputs: expected a non-empty array with input {spec.input.name!r}")
    if len(inputs) != 1:
        names = [i.get("name") if isinstance(i, dict) else None for i in inputs]
        raise ProtocolError(f"inputs: model {spec.name!r} takes exactly one input {spec.input.name!r}, got {names!r:.200}")
    where = "inputs[0]"
    tensor = _check_object(inputs[0], where, _INPUT_KEYS)
    name = tensor.get("name")
    if name != spec.input.name:
        raise ProtocolError(f"{where}.name: model {spec.name!r} has no input {name!r:.60}; its input is {spec.input.name!r}")
    where = f"input {spec.input.name!r}"
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in INPUT_DATATYPES:
        known = "" if datatype in DATATYPES else " (not an OIP datatype)"
        raise ProtocolError(f"{where}: datatype {datatype!r:.40}{known} is not accepted; expected one of "
                            f"{sorted(INPUT_DATATYPES)}")
    shape = _check_shape(tensor.get("shape"), spec, where)
    tensor_params = _check_object(tensor.get("parameters", {}), f"{where}.parameters")
    size = tensor_params.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ProtocolError(f"{where}.parameters.binary_data_size: expected a non-negative integer, got {size!r:.40}")
        if "data" in tensor:
            raise ProtocolError(f"{where}: has both 'data' and parameters.binary_data_size; send one")
        if json_length is None:
            raise ProtocolError(f"{where}: binary_data_size given but the {HEADER_LENGTH} header is missing")
        wire = np.dtype(INPUT_DATATYPES[datatype])
        expected = math.prod(shape) * wire.itemsize
        if size != expected:
            raise ProtocolError(
                f"{where}: binary_data_size is {size} bytes; shape {list(shape)} of {datatype} needs {expected}"
            )
        if len(binary) != size:
            raise ProtocolError(f"{where}: the body carries {len(binary)} bytes of binary data, binary_data_size says {size}")
        array = _finite_fp32(np.frombuffer(binary, dtype=wire).reshape(shape), where)
    else:
        if "data" not in tensor:
            raise ProtocolError(f"{where}: no 'data' and no parameters.binary_data_size")
        if len(binary):
            raise ProtocolError(f"{where}: {len(binary)} bytes follow the JSON header but no input declares binary data")
        array = _json_tensor(tensor["data"], shape, where, datatype)

    outputs: list[str] = []
    raw_outputs = request.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise ProtocolError(f"outputs: expected an array, got {_json_type(raw_outputs)}")
    for index, out in enumerate(raw_outputs):
        out = _check_object(out, f"outputs[{index}]", _OUTPUT_KEYS)
        if out.get("name") != spec.output.name:
            raise ProtocolError(
                f"outputs[{index}].name: model {spec.name!r} has no output {out.get('name')!r:.60}; "
                f"its output is {spec.output.name!r}"
            )
        out_params = _check_object(out.get("parameters", {}), f"outputs[{index}].parameters")
        binary_output = binary_output or _bool_param(out_params, "binary_data", f"outputs[{index}].parameters")
        if "classification" in out_params:
            classes = out_params["classification"]
            count = int(spec.output.shape[-1]) if len(spec.output.shape) == 2 else 0
            if isinstance(classes, bool) or not isinstance(classes, int) or not 1 <= classes <= max(1, count):
                raise ProtocolError(f"outputs[{index}].parameters.classification: expected an integer in 1..{count} "
                                    f"(the number of classes), got {classes!r:.40}")
            if count == 0:
                raise ProtocolError(f"outputs[{index}]: classification needs a [N, classes] output")
            classification = classes
        outputs.append(spec.output.name)
    return InferRequest(array, request_id, deadline_ms, binary_output, tuple(outputs), classification)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_infer_response(
    spec: ModelSpec, request: InferRequest, outputs: np.ndarray, parameters: dict[str, Any]
) -> tuple[bytes, dict[str, str]]:
    """The OIP response body and its content headers: JSON, or JSON + raw bytes when binary output was asked for.

    The output is the FP32 logits, or with the classification extension the top K classes as BYTES."""
    if request.classification:
        rows = top_classes(np.asarray(outputs, dtype=np.float32), request.classification)
        items = [item for row in rows for item in row]
        tensor: dict[str, Any] = {"name": spec.output.name, "datatype": "BYTES",
                                  "shape": [len(rows), request.classification]}
        data: list[Any] = items
        # BYTES in the binary extension: each element is a 4-byte little-endian length, then its bytes
        blob = b"".join(len(item).to_bytes(4, "little") + item.encode() for item in items)
    else:
        outputs = np.ascontiguousarray(outputs, dtype="<f4")
        tensor = {"name": spec.output.name, "datatype": "FP32", "shape": list(outputs.shape)}
        data, blob = outputs.reshape(-1).tolist(), outputs.tobytes()
    response: dict[str, Any] = {"model_name": spec.name, "model_version": spec.version}
    if request.id is not None:
        response["id"] = request.id
    response["parameters"] = parameters
    response["outputs"] = [tensor]
    if not request.binary_output:
        tensor["data"] = data
        text = json.dumps(response, default=_json_default, allow_nan=False).encode()
        return text, {"content-type": "application/json"}
    tensor["parameters"] = {"binary_data_size": len(blob)}
    text = json.dumps(response, default=_json_default, allow_nan=False).encode()
    return text + blob, {"content-type": "application/octet-stream", HEADER_LENGTH.lower(): str(len(text))}


def top_classes(outputs: np.ndarray, k: int) -> list[list[str]]:
    """Per row, the `k` highest scores as Triton's classification strings "score:index", best first."""
    order = np.argsort(-outputs, axis=1, kind="stable")[:, :k]
    return [[f"{float(row[i]):.6g}:{int(i)}" for i in idx] for row, idx in zip(outputs, order)]


class ModelStatistics:
    """The counters of Triton's statistics extension (`GET /v2/models/{name}/stats`), durations in ns."""

    def __init__(self) -> None:
        self.success = [0, 0.0]
        self.fail = [0, 0.0]
        self.queue = [0, 0.0]
        self.compute = [0, 0.0]
        self.receive = [0, 0.0]
        self.last_ms = 0
        self.batches: dict[int, list[float]] = {}

    def received(self, parse_ms: float) -> None:
        """A request was read and parsed (Triton's compute_input: here, the time to receive and parse it)."""
        self.receive[0] += 1
        self.receive[1] += parse_ms

    def succeeded(self, total_ms: float, queue_ms: float, compute_ms: float, batch_size: int) -> None:
        import time

        self.success[0] += 1
        self.success[1] += total_ms
        self.queue[0] += 1
        self.queue[1] += queue_ms
        self.compute[0] += 1
        self.compute[1] += compute_ms
        entry = self.batches.setdefault(int(batch_size), [0, 0.0])
        entry[0] += 1
        entry[1] += compute_ms
        self.last_ms = int(time.time() * 1000)

    def failed(self, total_ms: float) -> None:
        self.fail[0] += 1
        self.fail[1] += total_ms

    def to_dict(self, name: str, version: str) -> dict[str, Any]:
        def stat(pair: list[float]) -> dict[str, int]:
            return {"count": int(pair[0]), "ns": int(pair[1] * 1e6)}

        return {
            "name": name,
            "version": version,
            "last_inference": self.last_ms,
            "inference_count": int(self.success[0]),
            "execution_count": int(self.compute[0]),
            "inference_stats": {
                "success": stat(self.success),
                "fail": stat(self.fail),
                "queue": stat(self.queue),
                "compute_input": stat(self.receive),
                "compute_infer": stat(self.compute),
                "compute_output": {"count": int(self.success[0]), "ns": 0},
                "cache_hit": {"count": 0, "ns": 0},
                "cache_miss": {"count": 0, "ns": 0},
            },
            "batch_stats": [
                {"batch_size": b, "compute_input": {"count": int(c), "ns": 0},
                 "compute_infer": {"count": int(c), "ns": int(ms * 1e6)}, "compute_output": {"count": int(c), "ns": 0}}
                for b, (c, ms) in sorted(self.batches.items())
            ],
        }


def encode_infer_request(
    inputs: np.ndarray,
    spec: ModelSpec,
    binary: bool = True,
    deadline_ms: float | None = None,
    request_id: str | None = None,
    binary_output: bool = True,
) -> tuple[bytes, dict[str, str]]:
    """A request body (and headers) for `inputs`, as tritonclient would send it; used by benchmarks and tests."""
    inputs = np.ascontiguousarray(inputs, dtype="<f4")
    tensor: dict[str, Any] = {"name": spec.input.name, "shape": list(inputs.shape), "datatype": "FP32"}
    request: dict[str, Any] = {}
    if request_id is not None:
        request["id"] = request_id
    params: dict[str, Any] = {"binary_data_output": binary_output}
    if deadline_ms is not None:
        params["deadline_ms"] = deadline_ms
    request["parameters"] = params
    request["inputs"] = [tensor]
    if not binary:
        tensor["data"] = inputs.reshape(-1).tolist()
        return json.dumps(request).encode(), {"content-type": "application/json"}
    tensor["parameters"] = {"binary_data_size": inputs.nbytes}
    text = json.dumps(request).encode()
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(text))}
    return text + inputs.tobytes(), headers


def decode_infer_response(body: bytes, header_length: str | None) -> tuple[dict[str, Any], np.ndarray]:
    """The response JSON and its single output as an array (JSON or binary), for benchmarks and tests."""
    length = len(body) if header_length is None else int(header_length)
    response = json.loads(body[:length])
    tensor = response["outputs"][0]
    if "data" in tensor:
        array = np.asarray(tensor["data"], dtype=np.float32)
    else:
        array = np.frombuffer(body[length:], dtype="<f4").copy()
    return response, array.reshape(tensor["shape"])


def error_body(message: str) -> bytes:
    """The OIP error object `{"error": message}`."""
    return json.dumps({"error": message}).encode()
