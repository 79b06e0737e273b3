"""The ``"torch.export"`` architecture format: a model's graph without its weights.

Format
    ``payload = MAGIC + JSON``. The JSON holds ``programs`` (``"train"`` and, when it differs,
    ``"eval"``: each torch 2.13's schema-serialized ``ExportedProgram``, the JSON part of
    ``torch._export.serde.serialize.serialize`` with ``serialize_state_dict``,
    ``serialize_constants`` and ``serialize_example_inputs`` turned off), ``state_keys`` (the
    original ``state_dict`` keys, in order), ``aliases`` (tied entries: key -> key it shares a
    tensor with) and ``constants`` (non-persistent buffers and lifted tensor constants as
    dtype, shape and base64 raw bytes). Weights are never in the payload: they travel as the
    model's named arrays and are plugged into the graph on load.

    Train and eval graphs both travel because ``torch.export`` bakes the mode into the graph
    (dropout on/off, batch-norm batch statistics); the rebuilt :class:`ExportedModule` runs the
    one matching ``module.training``, both sharing the same parameter and buffer tensors, and
    its ``state_dict`` keys equal the original model's.

Security
    Nothing in this module unpickles, ``torch.load``-s, ``eval``-s or imports anything named by
    received bytes. torch's own ``torch.export.load`` is *not* safe on hostile bytes (sympy
    ``eval`` of shape expressions, ``exec`` of ``guards_code``, imports named in pytree
    contexts, and a ``torch.load(weights_only=False)`` fallback for the byte parts), so:

    * the payload is our own JSON envelope, parsed with :func:`json.loads` under a size limit;
    * each program goes through :func:`._export_guard.sanitize_program` (allow-listed ATen
      operators, identifiers, parsed-not-evaluated shape expressions, free-form fields
      stripped) before torch's deserializer sees it;
    * the state dict and constants are handed to the deserializer as dicts of tensors that we
      built from NumPy arrays, and ``example_inputs`` as empty bytes, so torch never calls
      ``torch.load`` at all;
    * ``ExportedProgram.module(check_guards=False)`` so no guard code is generated or run.

    What remains possible for a hostile peer is a graph that computes garbage or wastes memory
    and time when run (the graph is a program); it cannot run Python code or touch files.

Limits
    Export needs an example input (remembered from the first batch) and a model with a single
    tensor input; data-dependent Python control flow is not capturable (``torch.export``
    raises; the adapter then reports no architecture). The batch dimension is exported as a
    ``torch.export.Dim`` so any batch size (>= 1) works; other dimensions are fixed. Export
    runs on a CPU copy of the model; graphs that bake a device in run where they were traced.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch._export.serde import serialize as serde
from torch.export import Dim, ExportedProgram

from ..errors import ConfigurationError, ModelSyncError
from ._export_guard import ProgramSummary, check_state_name, sanitize_program
from .validation import check_array_names

__all__ = ["MAGIC", "MAX_PAYLOAD_BYTES", "ExportedModule", "export_program", "load_program"]

_log = logging.getLogger(__name__)

#: First bytes of every payload of this format (version 1).
MAGIC = b"SBTXP1\n"
#: Largest payload accepted on load, bytes.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
#: Most JSON arrays and objects an envelope may hold (a CNN's has ~300; parsing millions of
#: empty lists would hold the GIL for seconds and cost gigabytes).
MAX_JSON_CONTAINERS = 200_000
#: Largest constant tensor carried in the payload, bytes.
_MAX_CONSTANT_BYTES = 16 * 1024 * 1024
_CONSTANT_DTYPES = frozenset(
    {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}
)


def _export_one(model: nn.Module, example: Tensor) -> ExportedProgram:
    try:
        return torch.export.export(model, (example,), dynamic_shapes=({0: Dim("batch")},))
    except Exception as first:  # torch raises many types; retry with a static batch
        _log.info("export with a dynamic batch failed (%s); retrying with a static one", first)
    try:
        return torch.export.export(model, (example,))
    except Exception as exc:
        raise ConfigurationError(f"torch.export could not capture the model: {exc}") from exc


def _program_json(program: ExportedProgram) -> dict[str, Any]:
    artifact = serde.serialize(
        program,
        serialize_state_dict=False,
        serialize_constants=False,
        serialize_example_inputs=False,
    )
    decoded: dict[str, Any] = json.loads(artifact.exported_program)
    try:
        cleaned, _ = sanitize_program(decoded)
    except ModelSyncError as exc:
        raise ConfigurationError(f"the exported graph would be refused by peers: {exc}") from exc
    return cleaned


def _encode_constants(program: ExportedProgram) -> dict[str, Any]:
    encoded: dict[str, Any] = {}
    for name, value in program.constants.items():
        if not isinstance(value, Tensor):
            raise ConfigurationError(f"constant {name!r} is a {type(value).__name__}, not a tensor")
        array = np.array(value.detach().to("cpu").numpy(), copy=True, order="C")
        if array.nbytes > _MAX_CONSTANT_BYTES:
            raise ConfigurationError(
                f"constant {name!r} has {array.nbytes} bytes (max {_MAX_CONSTANT_BYTES}); "
                "register it as a persistent buffer so it travels with the weights"
            )
        encoded[name] = {
            "dtype": array.dtype.name,
            "shape": list(array.shape),
            "data": base64.b64encode(array.tobytes()).decode("ascii"),
        }
    return encoded


def _ties(model: nn.Module, captured: set[str]) -> dict[str, str]:
    """Map every state key that shares its tensor with an earlier key to that key."""
    first: dict[int, str] = {}
    ties: dict[str, str] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        canonical = first.setdefault(id(tensor), key)
        if canonical != key:
            ties[key] = canonical
        elif key not in captured:
            raise ConfigurationError(f"state entry {key!r} is not captured by torch.export")
    return ties


def export_program(model: nn.Module, example_input: Tensor) -> bytes:
    """Serialize ``model``'s train and eval graphs (no weights) into a payload.

    The model is moved to the CPU and switched between train and eval mode: pass a private
    copy when it is in use elsewhere.

    Args:
        model: the module to export.
        example_input: one input batch (batch size 2 recommended).

    Returns:
        The payload (``MAGIC`` + JSON), for ``Architecture(format="torch.export")``.

    Raises:
        ConfigurationError: torch.export cannot capture the model, or the model holds state
            that cannot travel (script objects, entries the graph does not capture).
    """
    model = model.to("cpu")
    example = example_input.detach().to("cpu")
    was_training = model.training
    programs: dict[str, dict[str, Any]] = {}
    constants: dict[str, Any] = {}
    captured: set[str] = set()
    for mode in ("train", "eval"):
        model.train(mode == "train")
        exported = _export_one(model, example)
        programs[mode] = _program_json(exported)
        constants.update(_encode_constants(exported))
        signature = exported.graph_signature
        captured |= set(signature.parameters) | set(signature.buffers)
    model.train(was_training)
    if programs["eval"] == programs["train"]:
        del programs["eval"]
    envelope = {
        "programs": programs,
        "state_keys": list(model.state_dict().keys()),
        "aliases": _ties(model, captured),
        "constants": constants,
        "torch_version": torch.__version__,
    }
    return MAGIC + json.dumps(envelope, separators=(",", ":")).encode("utf-8")


class ExportedModule(nn.Module):
    """A model rebuilt from exported graphs: trainable, with the original ``state_dict`` keys.

    The module owns the parameters and buffers (nested like the original model); each graph
    module shares its ``_parameters``, ``_buffers`` and ``_modules`` dictionaries, so
    ``.to(device)``, ``load_state_dict`` and optimizers act on the tensors the graphs read.
    ``forward`` runs the train graph in training mode and the eval graph in eval mode.

    Attributes:
        payload: the architecture payload this module was built from (served to peers as is).
    """

    _graphs: dict[str, nn.Module]
    payload: bytes

    def __init__(
        self,
        graphs: Mapping[str, nn.Module],
        state: Mapping[str, Tensor],
        parameters: set[str],
        persistent: set[str],
        payload: bytes,
    ) -> None:
        super().__init__()
        for name, tensor in state.items():
            _register(self, name, tensor, name in parameters, name in persistent)
        self.__dict__["_graphs"] = dict(graphs)
        self.__dict__["payload"] = payload
        self._link_graphs()

    def _link_graphs(self) -> None:
        """Make every graph read this module's tensors (again, e.g. after a deepcopy)."""
        for graph in self._graphs.values():
            graph.__dict__["_parameters"] = self._parameters
            graph.__dict__["_buffers"] = self._buffers
            graph.__dict__["_modules"] = self._modules
            graph.__dict__["_non_persistent_buffers_set"] = self._non_persistent_buffers_set
            for name in list(self._parameters) + list(self._buffers):
                graph.__dict__.pop(name, None)

    def forward(self, inputs: Tensor) -> Any:
        """Run the graph of the current mode on ``inputs``."""
        graph = self._graphs["train" if self.training else "eval"]
        if graph.__dict__.get("_modules") is not self._modules:
            self._link_graphs()
        return graph(inputs)


def _register(root: nn.Module, name: str, tensor: Tensor, param: bool, persistent: bool) -> None:
    *path, leaf = name.split(".")
    owner = root
    for part in path:
        child = owner._modules.get(part)
        if child is None:
            child = nn.Module()
            owner.add_module(part, child)
        owner = child
    if param:
        value = tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor)
        owner.register_parameter(leaf, value)
    else:
        owner.register_buffer(leaf, tensor, persistent=persistent)


def _payload_bytes(payload: object) -> bytes:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ModelSyncError("architecture payload must be bytes")
    return bytes(payload)


def _decode_envelope(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ModelSyncError(f"architecture payload is {len(data)} bytes (max {MAX_PAYLOAD_BYTES})")
    if not data.startswith(MAGIC):
        raise ModelSyncError("architecture payload is not a scatterbrained torch.export program")
    containers = data.count(b"[") + data.count(b"{")  # C speed, before any parsing
    if containers > MAX_JSON_CONTAINERS:
        raise ModelSyncError(
            f"architecture payload has {containers} JSON arrays/objects "
            f"(max {MAX_JSON_CONTAINERS}); refused unparsed"
        )
    try:
        envelope = json.loads(data[len(MAGIC) :].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelSyncError(f"architecture payload is not valid JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise ModelSyncError("architecture payload is not a JSON object")
    return envelope


def _decode_constant(name: str, spec: object) -> Tensor:
    if not isinstance(spec, dict) or spec.get("dtype") not in _CONSTANT_DTYPES:
        raise ModelSyncError(f"constant {name!r:.60} has an unsupported dtype")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 2**31 for n in shape
    ):
        raise ModelSyncError(f"constant {name!r:.60} has an invalid shape")
    dtype = np.dtype(str(spec["dtype"]))
    expected = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    try:
        raw = base64.b64decode(str(spec.get("data", "")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ModelSyncError(f"constant {name!r:.60} is not valid base64") from exc
    if expected > _MAX_CONSTANT_BYTES or len(raw) != expected:
        raise ModelSyncError(f"constant {name!r:.60} has {len(raw)} bytes, expected {expected}")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return torch.from_numpy(array)


def _state_tensors(
    envelope: dict[str, Any], arrays: Mapping[str, np.ndarray], summary: ProgramSummary
) -> tuple[dict[str, Tensor], set[str]]:
    """Build the state (original key order; tied keys share one tensor) and its parameters."""
    raw_keys, raw_aliases = envelope.get("state_keys"), envelope.get("aliases")
    if not isinstance(raw_keys, list) or not isinstance(raw_aliases, dict):
        raise ModelSyncError("architecture payload lacks state_keys/aliases")
    keys = [check_state_name(key) for key in raw_keys]
    aliases = {check_state_name(k): check_state_name(v) for k, v in raw_aliases.items()}
    canonical_keys = [key for key in keys if key not in aliases]
    captured = set(summary.parameters) | set(summary.buffers)
    if (
        len(set(keys)) != len(keys)
        or set(keys) != captured | set(aliases)
        or not set(aliases.values()) <= set(canonical_keys)
    ):
        raise ModelSyncError("architecture state_keys do not match the program's state")
    try:
        check_array_names(set(keys), set(arrays))
    except ConfigurationError as exc:
        raise ModelSyncError(f"weights do not fit the architecture: {exc}") from exc
    param_keys = {aliases.get(key, key) for key in summary.parameters}
    base: dict[str, Tensor] = {}
    for key in canonical_keys:
        array = np.asarray(arrays[key])
        if array.dtype.kind not in "fiub":
            raise ModelSyncError(f"array {key!r} has unsupported dtype {array.dtype}")
        tensor = torch.from_numpy(np.array(array, copy=True, order="C"))
        base[key] = nn.Parameter(tensor) if key in param_keys else tensor
    state = {key: base[aliases.get(key, key)] for key in keys}
    return state, {key for key in keys if aliases.get(key, key) in param_keys}


def _check_placeholders(program: ExportedProgram, tensors: Mapping[str, Tensor]) -> None:
    signature = program.graph_signature
    by_input = {
        **signature.inputs_to_parameters,
        **signature.inputs_to_buffers,
        **signature.inputs_to_lifted_tensor_constants,
    }
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in by_input:
            continue
        target = by_input[node.name]
        expected, given = node.meta.get("val"), tensors.get(target)
        if given is None or not isinstance(expected, Tensor):
            raise ModelSyncError(f"program input {target!r} has no tensor")
        if tuple(expected.shape) != tuple(given.shape) or expected.dtype != given.dtype:
            raise ModelSyncError(
                f"array {target!r} is {given.dtype}{tuple(given.shape)}, the graph expects "
                f"{expected.dtype}{tuple(expected.shape)}"
            )


def _build_graph(
    program_json: dict[str, Any], state: dict[str, Tensor], constants: dict[str, Tensor]
) -> nn.Module:
    artifact = serde.SerializedArtifact(
        exported_program=json.dumps(program_json).encode("utf-8"),
        state_dict=state,  # type: ignore[arg-type]  # dicts bypass torch.load by design
        constants=constants,  # type: ignore[arg-type]
        example_inputs=b"",
    )
    try:
        program = serde.deserialize(artifact)
        _check_placeholders(program, {**state, **constants})
        return program.module(check_guards=False)
    except ModelSyncError:
        raise
    except Exception as exc:  # torch raises many types on malformed programs
        raise ModelSyncError(f"torch could not rebuild the exported program: {exc}") from exc


def load_program(
    payload: bytes, arrays: Mapping[str, np.ndarray], *, device: str = "cpu"
) -> ExportedModule:
    """Rebuild a trainable module from a payload and its weights, without running its code.

    Args:
        payload: bytes made by :func:`export_program` (possibly hostile).
        arrays: the weights, named like the original ``state_dict``.
        device: where the rebuilt module lives.

    Returns:
        The rebuilt module (an ``nn.Module`` whose ``state_dict`` keys equal ``arrays``').

    Raises:
        ModelSyncError: the payload is malformed or outside the allow-list, or the arrays do
            not fit the graph (names, shapes, dtypes).
    """
    payload = _payload_bytes(payload)
    envelope = _decode_envelope(payload)
    programs = envelope.get("programs")
    if not isinstance(programs, dict) or "train" not in programs or len(programs) > 2:
        raise ModelSyncError("architecture payload must hold a 'train' (and 'eval') program")
    if set(programs) - {"train", "eval"}:
        raise ModelSyncError("architecture payload holds programs other than 'train'/'eval'")
    checked = {mode: sanitize_program(program) for mode, program in programs.items()}
    summary = checked["train"][1]
    if any(other != summary for _, other in checked.values()):
        raise ModelSyncError("the eval program's state differs from the train program's")
    raw_constants = envelope.get("constants")
    if not isinstance(raw_constants, dict) or set(raw_constants) != set(summary.constants):
        raise ModelSyncError("architecture constants do not match the program's")
    constants = {name: _decode_constant(name, spec) for name, spec in raw_constants.items()}
    state, parameters = _state_tensors(envelope, arrays, summary)
    captured = {key: state[key] for key in summary.parameters + summary.buffers}
    graphs = {mode: _build_graph(prog, captured, constants) for mode, (prog, _) in checked.items()}
    graphs.setdefault("eval", graphs["train"])
    module = ExportedModule(graphs, {**state, **constants}, parameters, set(state), payload)
    return module.to(device)
