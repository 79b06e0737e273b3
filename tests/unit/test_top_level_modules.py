"""``scatterbrained.policies``, ``.topology`` and ``.aggregation``: the README's ``sb.X.Name``."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import scatterbrained as sb

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("name", ["policies", "topology", "aggregation"])
def test_each_module_re_exports_the_public_names_of_its_federation_module(name: str) -> None:
    module = importlib.import_module(f"scatterbrained.{name}")
    impl = importlib.import_module(f"scatterbrained.federation.{name}")

    assert module.__doc__ and f"import scatterbrained.{name}" in module.__doc__
    assert sorted(module.__all__) == sorted(impl.__all__)
    for public in impl.__all__:
        assert getattr(module, public) is getattr(impl, public), public


def test_the_readme_spellings_work() -> None:
    import scatterbrained.aggregation as aggregation
    import scatterbrained.policies as policies
    import scatterbrained.topology as topology
    from scatterbrained.federation.policies import LeechUntil

    assert policies.LeechUntil(samples=1000) == LeechUntil(1000)
    assert sb.policies.LeechUntil is LeechUntil
    assert sb.policies.after_epochs(5, then=sb.OperatingMode.PEER).epochs == 5
    assert isinstance(sb.topology.Ring(), topology.Ring)
    assert isinstance(sb.aggregation.TrimmedMean(trim=0.1), aggregation.TrimmedMean)


def test_a_fresh_interpreter_imports_them_directly() -> None:
    code = (
        "import scatterbrained.policies as p, scatterbrained.topology as t, "
        "scatterbrained.aggregation as a; print(p.LeechUntil(3), t.Ring(), a.FedAvg())"
    )

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=25, check=False
    )

    assert done.returncode == 0, done.stderr
    assert "LeechUntil(samples=3" in done.stdout
