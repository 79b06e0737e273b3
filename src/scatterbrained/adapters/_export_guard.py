"""Validation of a received ``torch.export`` program (JSON) before torch ever sees it.

torch's own deserializer trusts its input. In torch 2.13 a crafted program can run code: symbolic
shape expressions go through ``sympy.sympify`` (an ``eval``), ``guards_code`` strings are
``exec``-ed by ``ExportedProgram.module()``, pytree contexts may name any module to import
(``"__enum__"``), names end up in generated Python source, and byte parts fall back to
``torch.load(weights_only=False)``. This module closes those doors by checking the program
against an allow-list and stripping every free-form field:

* node metadata, ``guards_code``, graph-module metadata and named-tuple definitions are dropped;
* every call target is an ATen ``OpOverload`` (C++ kernels, minus a deny-list of ops that touch
  files or global state) or one of a few symbolic-integer helpers;
* names are Python identifiers, state names are dotted identifiers that cannot shadow a module's
  own attributes, strings hold no control characters or quotes;
* symbolic expressions parse (with :mod:`ast`, never evaluated here) to calls of allow-listed
  sympy constructors on literals, with no power operator (no huge-number denial of service);
* inputs are parameters, buffers, tensor constants and exactly one user input; outputs are user
  outputs and buffer mutations; no subgraphs, custom objects or operator arguments.

Everything here is pure JSON checking; torch is imported only to resolve ATen op names.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelSyncError

__all__ = ["ProgramSummary", "check_state_name", "sanitize_program"]

_MAX_DEPTH = 64
_MAX_STRING = 4096
_MAX_EXPR = 2000
_MAX_EXPR_NODES = 400

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}\Z")
_STATE_PART = re.compile(r"[A-Za-z0-9_]{1,200}\Z")
_SYMBOL = re.compile(r"[a-z]{1,3}[0-9]{1,9}\Z")
_NUMBER = re.compile(r"-?[0-9]{0,30}\.?[0-9]{1,30}(e[+-]?[0-9]{1,6})?\Z")
_PLAIN_TEXT = re.compile(r"[\x20-\x7e]*\Z")
_QUOTES = re.compile(r"[\"'\\`]")

#: Strings in these fields may contain quotes (they are parsed and checked on their own).
_QUOTED_FIELDS = frozenset({"expr_str", "in_spec", "out_spec"})
#: Argument kinds that would smuggle subgraphs, script objects or callables.
_FORBIDDEN_KEYS = frozenset(
    {"as_graph", "as_graphs", "as_custom_obj", "as_custom_objs", "as_operator", "as_operators"}
)
_ALLOWED_VERIFIERS = frozenset({"TRAINING", "ATEN"})
_INPUT_KINDS = frozenset({"parameter", "buffer", "tensor_constant", "user_input"})
_OUTPUT_KINDS = frozenset({"user_output", "buffer_mutation"})

_SYM_TARGETS = frozenset(
    {f"_operator.{op}" for op in ("add", "sub", "mul", "floordiv", "truediv", "mod", "neg")}
    | {f"_operator.{op}" for op in ("pos", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_")}
    | {"_operator.getitem", "math.trunc", "torch._sym_sqrt"}
    | {f"torch.sym_{op}" for op in ("float", "int", "not", "max", "min", "ite")}
)
#: ATen ops that read or write files, print, or change process-global state.
_DENIED_ATEN = frozenset(
    {
        "from_file", "save", "_print", "warn", "set_", "set_data", "record_stream",
        "set_grad_enabled", "_set_item", "_cufft_set_plan_cache_max_size",
        "_cufft_clear_plan_cache", "_test_warn_in_autograd",
    }
)  # fmt: skip

_SYMPY_CALLS = frozenset(
    {
        "Symbol", "Integer", "Float", "Rational", "Mul", "Add", "Max", "Min", "Abs",
        "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Equality", "Unequality",
        "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan",
        "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilDiv",
        "CeilToInt", "FloorToInt", "IntTrueDiv", "FloatTrueDiv", "TruncToFloat", "TruncToInt",
        "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
    }
)  # fmt: skip
_SYMPY_NAMES = frozenset({"oo", "zoo", "nan", "true", "false", "int_oo"})
_SYMPY_KEYWORDS = frozenset(
    {
        "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite",
        "nonzero", "zero", "rational", "precision", "evaluate", "commutative",
    }
)  # fmt: skip
_EXPR_NODES = (
    ast.Expression, ast.Call, ast.Name, ast.Load, ast.keyword, ast.Constant, ast.BinOp,
    ast.UnaryOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.USub, ast.UAdd,
)  # fmt: skip


@dataclass
class ProgramSummary:
    """What a sanitized program takes as state.

    Attributes:
        parameters: parameter names (trainable state, ``nn.Parameter``).
        buffers: persistent buffer names (part of the ``state_dict``).
        constants: non-persistent buffers and lifted tensor constants (travel in the payload).
    """

    parameters: list[str] = field(default_factory=list)
    buffers: list[str] = field(default_factory=list)
    constants: list[str] = field(default_factory=list)


@functools.cache
def _reserved_attributes() -> frozenset[str]:
    import torch

    module_attrs = set(vars(torch.nn.Module()))
    extras = {"_in_spec", "_out_spec", "_graph", "_code", "meta", "shape_env", "graph", "code"}
    return frozenset(set(dir(torch.fx.GraphModule)) | module_attrs | extras)


def check_state_name(name: object) -> str:
    """Return ``name`` when it is a safe dotted state name (``"body.0.weight"``).

    Raises:
        ModelSyncError: empty parts, characters other than letters, digits and ``_``, dunder
            parts, or a part that would shadow a module attribute (``forward``, ``_modules``).
    """
    if not isinstance(name, str) or not 0 < len(name) <= 1000:
        raise ModelSyncError(f"state name must be a short string, got {name!r:.80}")
    reserved = _reserved_attributes()
    for part in name.split("."):
        if not _STATE_PART.match(part) or part.startswith("__") or part in reserved:
            raise ModelSyncError(f"state name {name!r:.80} is not allowed (part {part!r:.40})")
    return name


def _walk(value: Any, key: str, depth: int) -> Iterator[tuple[str, Any]]:
    if depth > _MAX_DEPTH:
        raise ModelSyncError(f"program nests deeper than {_MAX_DEPTH} levels")
    yield key, value
    if isinstance(value, dict):
        for child_key, child in value.items():
            if not isinstance(child_key, str):
                raise ModelSyncError("program has a non-string key")
            yield from _walk(child, child_key, depth + 1)
    elif isinstance(value, list):
        for child in value:
            yield from _walk(child, key, depth + 1)


def _check_strings(program: dict[str, Any]) -> None:
    for key, value in _walk(program, "", 0):
        if key in _FORBIDDEN_KEYS or (isinstance(value, dict) and _FORBIDDEN_KEYS & set(value)):
            raise ModelSyncError(f"program uses an unsupported argument kind ({key or value})")
        if not isinstance(value, str):
            continue
        if len(value) > _MAX_STRING or not _PLAIN_TEXT.match(value):
            raise ModelSyncError(f"string in field {key!r} is too long or not printable ASCII")
        if key in _QUOTED_FIELDS:
            if "__" in value:
                raise ModelSyncError(f"field {key!r} contains a dunder name")
        elif _QUOTES.search(value):
            raise ModelSyncError(f"string in field {key!r} contains quotes or backslashes")
        if key in ("name", "as_name") and not _IDENTIFIER.match(value):
            raise ModelSyncError(f"name {value!r:.80} is not a Python identifier")
        if key == "expr_str":
            check_sym_expr(value)


def check_sym_expr(text: str) -> None:
    """Check a sympy ``srepr`` expression without evaluating it.

    Raises:
        ModelSyncError: the text is not a small tree of allow-listed sympy constructors,
            symbols, numeric literals and ``+ - * / // %``.
    """
    if len(text) > _MAX_EXPR:
        raise ModelSyncError("symbolic expression is too long")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ModelSyncError(f"symbolic expression does not parse: {text!r:.80}") from exc
    nodes = list(ast.walk(tree))
    if len(nodes) > _MAX_EXPR_NODES:
        raise ModelSyncError("symbolic expression is too large")
    for node in nodes:
        _check_expr_node(node, text)


def _check_expr_node(node: ast.AST, text: str) -> None:
    if not isinstance(node, _EXPR_NODES):
        raise ModelSyncError(f"symbolic expression uses {type(node).__name__}: {text!r:.80}")
    if isinstance(node, ast.Call) and not (
        isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS
    ):
        raise ModelSyncError(f"symbolic expression calls a disallowed function: {text!r:.80}")
    if isinstance(node, ast.Name) and not (
        node.id in _SYMPY_CALLS or node.id in _SYMPY_NAMES or _SYMBOL.match(node.id)
    ):
        raise ModelSyncError(f"symbolic expression names {node.id!r:.40}")
    if isinstance(node, ast.keyword):
        value = node.value
        if node.arg not in _SYMPY_KEYWORDS or not isinstance(value, ast.Constant):
            raise ModelSyncError(f"symbolic expression has keyword {node.arg!r:.40}")
        if node.arg == "precision" and not (isinstance(value.value, int) and value.value <= 256):
            raise ModelSyncError("symbolic expression asks for an unreasonable precision")
    if isinstance(node, ast.Constant):
        _check_expr_constant(node.value, text)


def _check_expr_constant(value: object, text: str) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int) and abs(value) < 2**63:
        return
    if isinstance(value, float):
        return
    if isinstance(value, str) and (_SYMBOL.match(value) or _NUMBER.match(value)):
        return
    raise ModelSyncError(f"symbolic expression has literal {value!r:.40}: {text!r:.80}")


def _check_target(target: object) -> None:
    if not isinstance(target, str):
        raise ModelSyncError(f"node target must be a string, got {type(target).__name__}")
    if target in _SYM_TARGETS:
        return
    parts = target.split(".")
    if len(parts) != 5 or parts[:3] != ["torch", "ops", "aten"]:
        raise ModelSyncError(f"operator {target!r:.80} is not an ATen operator")
    op_name, overload_name = parts[3], parts[4]
    if not (_IDENTIFIER.match(op_name) and _IDENTIFIER.match(overload_name)):
        raise ModelSyncError(f"operator {target!r:.80} is malformed")
    if op_name in _DENIED_ATEN or op_name.startswith("_test"):
        raise ModelSyncError(f"operator {target!r:.80} is not allowed (side effects)")
    import torch

    try:
        overload = getattr(getattr(torch.ops.aten, op_name), overload_name)
    except (AttributeError, RuntimeError) as exc:
        raise ModelSyncError(f"operator {target!r:.80} does not exist in this torch") from exc
    if not isinstance(overload, torch._ops.OpOverload):
        raise ModelSyncError(f"operator {target!r:.80} is not an operator overload")


def _check_treespec(text: object) -> None:
    import json

    try:
        protocol, spec = json.loads(str(text))
    except (ValueError, TypeError, RecursionError) as exc:
        raise ModelSyncError("input/output spec is malformed") from exc
    if protocol != 1:
        raise ModelSyncError(f"input/output spec protocol {protocol!r} is not supported")
    _check_treespec_node(spec, 0)


def _check_treespec_node(spec: object, depth: int) -> None:
    import json

    if depth > _MAX_DEPTH or not isinstance(spec, dict):
        raise ModelSyncError("input/output spec is malformed")
    if spec.get("type") not in (None, "builtins.tuple", "builtins.list", "builtins.dict"):
        raise ModelSyncError(f"input/output spec uses type {spec.get('type')!r:.60}")
    context = spec.get("context")
    if context is not None:
        try:
            decoded = json.loads(context) if isinstance(context, str) else context
        except (ValueError, RecursionError) as exc:
            raise ModelSyncError("input/output spec context is malformed") from exc
        if not (decoded is None or isinstance(decoded, list)) or any(
            not isinstance(item, (str, int)) for item in decoded or []
        ):
            raise ModelSyncError("input/output spec context must be a list of keys")
    children = spec.get("children_spec")
    if not isinstance(children, list):
        raise ModelSyncError("input/output spec is malformed")
    for child in children:
        _check_treespec_node(child, depth + 1)


def _dict_field(container: dict[str, Any], key: str) -> dict[str, Any]:
    value = container.get(key)
    if not isinstance(value, dict):
        raise ModelSyncError(f"program field {key!r} is missing or not an object")
    return value


def _list_field(container: dict[str, Any], key: str) -> list[Any]:
    value = container.get(key)
    if not isinstance(value, list):
        raise ModelSyncError(f"program field {key!r} is missing or not a list")
    return value


def _single_kind(spec: object, allowed: frozenset[str]) -> tuple[str, dict[str, Any]]:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ModelSyncError("signature entry is malformed")
    ((kind, body),) = spec.items()
    if kind not in allowed or not isinstance(body, dict):
        raise ModelSyncError(f"signature entry kind {kind!r:.40} is not supported")
    return kind, body


def _summarize_signature(signature: dict[str, Any]) -> ProgramSummary:
    summary = ProgramSummary()
    user_inputs = 0
    for spec in _list_field(signature, "input_specs"):
        kind, body = _single_kind(spec, _INPUT_KINDS)
        if kind == "user_input":
            user_inputs += 1
        elif kind == "parameter":
            summary.parameters.append(check_state_name(body.get("parameter_name")))
        elif kind == "buffer":
            name = check_state_name(body.get("buffer_name"))
            persistent = body.get("persistent")
            (summary.buffers if persistent is True else summary.constants).append(name)
        else:
            summary.constants.append(check_state_name(body.get("tensor_constant_name")))
    if user_inputs != 1:
        raise ModelSyncError(f"program takes {user_inputs} user inputs; exactly 1 is supported")
    for spec in _list_field(signature, "output_specs"):
        kind, body = _single_kind(spec, _OUTPUT_KINDS)
        if kind == "buffer_mutation":
            check_state_name(body.get("buffer_name"))
    names = summary.parameters + summary.buffers + summary.constants
    if len(set(names)) != len(names):
        raise ModelSyncError("program names one state entry twice")
    return summary


def _check_header(program: dict[str, Any]) -> None:
    verifiers = _list_field(program, "verifiers")
    if not set(verifiers) <= _ALLOWED_VERIFIERS:
        raise ModelSyncError(f"program verifiers {verifiers!r:.80} are not supported")
    for name, bounds in _dict_field(program, "range_constraints").items():
        if not _SYMBOL.match(name) or not isinstance(bounds, dict):
            raise ModelSyncError(f"range constraint {name!r:.40} is malformed")
        for bound in (bounds.get("min_val"), bounds.get("max_val")):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int)):
                raise ModelSyncError(f"range constraint {name!r:.40} has a non-integer bound")


def sanitize_program(program: object) -> tuple[dict[str, Any], ProgramSummary]:
    """Strip free-form fields from a received program and check the rest.

    Args:
        program: the decoded JSON of a ``torch.export`` program (schema of torch 2.13).

    Returns:
        The program, changed in place (metadata and guards removed), and its state summary.

    Raises:
        ModelSyncError: anything outside the allow-list; the message says what.
    """
    if not isinstance(program, dict):
        raise ModelSyncError("program is not a JSON object")
    program["guards_code"] = []
    graph_module = _dict_field(program, "graph_module")
    graph_module["metadata"] = {}
    graph_module["treespec_namedtuple_fields"] = {}
    graph = _dict_field(graph_module, "graph")
    if graph.get("custom_obj_values"):
        raise ModelSyncError("program carries custom objects")
    for node in _list_field(graph, "nodes"):
        if not isinstance(node, dict):
            raise ModelSyncError("graph node is not an object")
        node["metadata"] = {}
        _check_target(node.get("target"))
    for entry in _list_field(graph_module, "module_call_graph"):
        if not isinstance(entry, dict):
            raise ModelSyncError("module call graph entry is malformed")
        if entry.get("fqn"):
            check_state_name(entry["fqn"])
        signature = entry.get("signature")
        if isinstance(signature, dict):
            _check_treespec(signature.get("in_spec"))
            _check_treespec(signature.get("out_spec"))
            for arg_name in signature.get("forward_arg_names") or []:
                if not isinstance(arg_name, str) or not _IDENTIFIER.match(arg_name):
                    raise ModelSyncError(f"forward argument name {arg_name!r:.40} is invalid")
    _check_header(program)
    _check_strings(program)
    return program, _summarize_signature(_dict_field(graph_module, "signature"))
