"""Signing keys: where the signing key is mounted."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import ROOT

# --- where the signing key is mounted --------------------------------------------------------


def test_the_helm_test_pod_mounts_no_secret() -> None:
    """The test pod mounted the signing-key Secret to check its size; verifying needs only
    the public key, so no pod besides the audit task should see the private key."""
    pytest.importorskip("helm_python")
    from sslops.k8s.render import render_helm

    chart = ROOT / "helm" / "sslops"
    for values in ([], [chart / "values-onprem.yaml"]):
        documents = [d for d in yaml.safe_load_all(render_helm(chart, values)) if d]
        (pod,) = [d for d in documents if d["kind"] == "Pod"]
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert [v for v in pod["spec"].get("volumes", []) if "secret" in v] == []
        text = yaml.safe_dump(pod)
        assert "secretKeyRef" not in text and "secretRef" not in text
        assert "sslops-signing-key" not in text
