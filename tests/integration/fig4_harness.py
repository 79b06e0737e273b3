"""Runs one of the paper's Fig. 4 programs verbatim and reports what its namespace holds.

``python fig4_harness.py PROGRAM.py REPORT.jsonl``: the program's source runs unchanged
(``runpy``); the harness only subscribes to the event stream of every ``sb.Node`` the program
creates and appends, on each model change or sync, one JSON line to REPORT: the weights'
digest, the model version and (once) the output shape of the model on a random batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
import sys
from typing import Any

import scatterbrained as sb
from scatterbrained.events import Event, ModelChanged, ModelSynced


def _digest(model: Any) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _report(node: sb.Node, path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def on_event(event: Event) -> None:
        if not isinstance(event, (ModelChanged, ModelSynced)):
            return
        ns = node.namespaces.get(event.namespace)
        if ns is None or ns.model is None:
            return
        row: dict[str, Any] = {"kind": type(event).__name__, "digest": _digest(ns.model)}
        row["version"] = ns.version
        if isinstance(event, ModelSynced):
            import torch

            with torch.no_grad():
                row["output_shape"] = list(ns.model(torch.randn(4, 16)).shape)
        os.write(fd, (json.dumps(row) + "\n").encode())

    node.subscribe(on_event)


def main() -> None:
    program, report = sys.argv[1], sys.argv[2]
    original_init = sb.Node.__init__

    def init(self: sb.Node, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        _report(self, report)

    sb.Node.__init__ = init  # type: ignore[method-assign]
    runpy.run_path(program, run_name="__main__")


if __name__ == "__main__":
    main()
