"""kopf's settings as the operator sets them."""

from __future__ import annotations

import kopf

from switchyard.operator.runtime import KOPF_PREFIX, kopf_settings, liveness_endpoint
from tests.operator.harness import operator_settings


def test_kopf_bookkeeping_stays_out_of_the_status_and_the_demand_annotation() -> None:
    ks = kopf_settings(operator_settings("models"))
    assert isinstance(ks.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(ks.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert KOPF_PREFIX == "operator.switchyard.dev"  # not switchyard.dev: see runtime.py
    assert ks.scanning.disabled
    selectors = dict(ks.watching.label_selectors.items())
    assert list(selectors.values()) == ["app.kubernetes.io/managed-by=switchyard-operator"]


def test_standalone_unless_peering_is_named() -> None:
    assert kopf_settings(operator_settings("models")).peering.standalone
    peered = kopf_settings(operator_settings("models", peering="switchyard"))
    assert not peered.peering.standalone
    assert peered.peering.name == "switchyard"
    assert peered.peering.mandatory
    assert not peered.peering.clusterwide
    assert kopf_settings(
        operator_settings("models", peering="p", namespaces=[])
    ).peering.clusterwide


def test_liveness_endpoint() -> None:
    assert liveness_endpoint(operator_settings("models", liveness_port=8080)) == (
        "http://0.0.0.0:8080/healthz"
    )
    assert liveness_endpoint(operator_settings("models", liveness_port=0)) is None
