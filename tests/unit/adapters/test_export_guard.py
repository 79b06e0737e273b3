"""Tests of the allow-list checks applied to received torch.export programs."""

from __future__ import annotations

import contextlib
import json
import pathlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("torch")

from scatterbrained.adapters._export_guard import (
    check_state_name,
    check_sym_expr,
    sanitize_program,
)
from scatterbrained.errors import ModelSyncError

_SEEN_IN_EXPORTS = [
    "s77",
    "Symbol('s77', positive=True, integer=True)",
    "ToFloat(Symbol('s77', positive=True, integer=True))",
    "Mul(Float('0.5', precision=53), ToFloat(Symbol('s77', positive=True, integer=True)))",
    "FloorDiv(Symbol('s0', integer=True), Integer(2))",
    "Add(Integer(-1), Symbol('s1', positive=True))",
    "s0*2 + 1",
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text", _SEEN_IN_EXPORTS)
def test_shape_expressions_from_real_exports_pass(text: str) -> None:
    # Execute / Assert (no exception)
    check_sym_expr(text)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "Symbol.__class__",
        "Symbol('s0').__init__",
        "(lambda: 1)()",
        "[c for c in ()]",
        "Integer(9) ** Integer(999999999)",
        "Pow(Integer(9), Integer(99999999))",
        "Integer(10**100)",
        "Integer(99999999999999999999999)",
        "Float('0.5', precision=100000000)",
        "Symbol('x; import os')",
        "open('/etc/passwd')",
        "eval('1')",
        "Symbol(s0)[0]",
        "Symbol('s0', **{'a': 1})",
        "1 if s0 else 2",
        "not valid python (",
        "x" * 5000,
    ],
)
def test_dangerous_or_expensive_expressions_are_rejected(text: str) -> None:
    # Execute / Assert
    with pytest.raises(ModelSyncError):
        check_sym_expr(text)


@pytest.mark.timeout(60)
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="Symbol()'s0123,=+-*/_. Trueipnotegr[]{}:lambda", max_size=80))
def test_random_expressions_only_ever_raise_model_sync_error(text: str) -> None:
    # Execute / Assert: accepted or ModelSyncError, nothing else
    with contextlib.suppress(ModelSyncError):
        check_sym_expr(text)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", ["weight", "body.0.weight", "layers.12.attn.q_proj", "_private.w"])
def test_ordinary_state_names_pass(name: str) -> None:
    # Execute / Assert
    assert check_state_name(name) == name


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "name",
    ["", "a..b", "forward", "body.__class__", 'x").y', "a b", "_modules", "training", 3, None],
)
def test_dangerous_state_names_are_rejected(name: Any) -> None:
    # Execute / Assert
    with pytest.raises(ModelSyncError):
        check_state_name(name)


def _minimal_program(target: str = "torch.ops.aten.relu.default") -> dict[str, Any]:
    spec = json.dumps([1, {"type": None, "context": None, "children_spec": []}])
    return {
        "graph_module": {
            "graph": {
                "nodes": [
                    {"target": target, "inputs": [], "outputs": [], "metadata": {"x": "y"}},
                ],
                "tensor_values": {},
            },
            "signature": {
                "input_specs": [
                    {"parameter": {"arg": {"name": "p_w"}, "parameter_name": "w"}},
                    {"buffer": {"arg": {"name": "b_c"}, "buffer_name": "c", "persistent": False}},
                    {"user_input": {"arg": {"as_tensor": {"name": "x"}}}},
                ],
                "output_specs": [{"user_output": {"arg": {"as_tensor": {"name": "relu"}}}}],
            },
            "module_call_graph": [
                {"fqn": "", "signature": {"in_spec": spec, "out_spec": spec}},
            ],
            "metadata": {"custom": "{}"},
        },
        "verifiers": ["TRAINING"],
        "range_constraints": {"s0": {"min_val": 0, "max_val": None}},
        "guards_code": ["__import__('os')"],
    }


@pytest.mark.timeout(10)
def test_sanitize_strips_free_form_fields_and_summarizes_state() -> None:
    # Prepare
    program = _minimal_program()
    # Execute
    cleaned, summary = sanitize_program(program)
    # Assert
    assert cleaned["guards_code"] == []
    assert cleaned["graph_module"]["metadata"] == {}
    assert cleaned["graph_module"]["graph"]["nodes"][0]["metadata"] == {}
    assert summary.parameters == ["w"] and summary.buffers == [] and summary.constants == ["c"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "target",
    [
        "torch.load",
        "torch.ops.aten.from_file.default",
        "torch.ops.aten.save.default",
        "torch.ops.aten.no_such_op.default",
        "torch.ops.aten.relu.no_such_overload",
        "torch.ops.higher_order.cond",
        "torch.ops.aten.relu.default.__class__",
        "builtins.eval",
        "_operator.pow",
        "#namespace.op",
        7,
    ],
)
def test_disallowed_targets_are_rejected(target: Any) -> None:
    # Prepare
    program = _minimal_program(target)
    # Execute / Assert
    with pytest.raises(ModelSyncError):
        sanitize_program(program)


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    program = _minimal_program()
    node: Any = program
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return program


_GM = "graph_module"
_SIG = [_GM, "signature"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "program",
    [
        _with(["verifiers"], ["EXOTIC"]),
        _with(["range_constraints"], {"s0": {"min_val": "__import__", "max_val": None}}),
        _with(["range_constraints"], {"bad name": {"min_val": 0, "max_val": 1}}),
        _with([*_SIG, "input_specs", 2], {"custom_obj": {"arg": {"name": "o"}}}),
        _with([*_SIG, "input_specs"], []),
        _with([*_SIG, "output_specs", 0], {"loss_output": {"arg": {"as_tensor": {"name": "r"}}}}),
        _with([_GM, "graph", "custom_obj_values"], {"o": {"blob": "x"}}),
        _with([_GM, "graph", "nodes", 0, "inputs"], [{"name": "g", "arg": {"as_graph": {}}}]),
        _with([_GM, "graph", "nodes", 0, "outputs"], [{"as_tensor": {"name": "a'b"}}]),
        _with([_GM, "module_call_graph", 0, "signature", "in_spec"], "not json"),
        _with([_GM, "module_call_graph", 0, "fqn"], "__class__"),
        _with([_GM, "graph"], []),
    ],
)
def test_malformed_programs_are_rejected(program: dict[str, Any]) -> None:
    # Execute / Assert
    with pytest.raises(ModelSyncError):
        sanitize_program(program)


@pytest.mark.timeout(10)
def test_enum_contexts_in_specs_are_rejected(tmp_path: pathlib.Path) -> None:
    # Prepare
    context = json.dumps({"__enum__": True, "fqn": "this:x", "name": "y"})
    spec = json.dumps([1, {"type": "builtins.dict", "context": context, "children_spec": []}])
    program = _with([_GM, "module_call_graph", 0, "signature", "in_spec"], spec)
    # Execute / Assert
    with pytest.raises(ModelSyncError):
        sanitize_program(program)


@pytest.mark.timeout(10)
def test_deeply_nested_programs_are_rejected() -> None:
    # Prepare
    nested: Any = "leaf"
    for _ in range(200):
        nested = [nested]
    program = _with([_GM, "graph", "tensor_values"], {"t": nested})
    # Execute / Assert
    with pytest.raises(ModelSyncError, match="deeper"):
        sanitize_program(program)
