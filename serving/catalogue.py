"""GET /v1/models: what is served and how to call it, without reading our code."""

from __future__ import annotations

from typing import Any

from keel.serving.runtime import Runtime


def catalogue(rt: Runtime) -> dict[str, Any]:
    models = []
    for name, served in sorted(rt.models.snapshot.models.items()):
        m = served.loaded.model
        models.append(
            {
                **served.versions,
                "route": f"/v1/{name}/decide",
                "alpha": m.alpha,
                "delta": m.delta,
                "threshold": m.threshold,
                "coverage_at_registration": served.loaded.ref.tags.get("keel.coverage"),
                "classes": list(m.classes),
                "contract": m.contract.public(),
                "policy": served.policy.public(),
                "policy_sealed": served.spec.sealed,  # False: registered before policies were sealed
            }
        )
    return {"models": models, "ready": rt.models.ready}
