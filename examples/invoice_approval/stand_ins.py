"""STAND-INS for what a real deployment has: invoices from the ERP, and the people who work the
user tasks. Nothing here talks to Keel; replace all of it with your own.

The people are played deterministically from the invoice so that a run can be repeated and
tested: each applies accounts payable's checklist (the same rule the synthetic training data
is labelled with), so they mostly agree with Keel and now and then override it.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["PEOPLE", "checklist", "sample_invoices"]

# region, entity, currency and the tax rate its tax engine expects (percent)
ENTITIES = [
    ("EMEA", "DE01", "EUR", 19.0),
    ("NA", "US01", "USD", 0.0),
    ("EMEA", "GB01", "GBP", 20.0),
    ("APAC", "SG01", "SGD", 9.0),
    ("APAC", "JP01", "JPY", 10.0),
    ("LATAM", "BR01", "BRL", 17.0),
]
REGIONS = ["NA", "EMEA", "APAC", "LATAM"]
KINDS = [
    "clean",
    "new_vendor",  # clean, but a vendor onboarded weeks ago: the policy asks finance
    "unclear",  # on four of the checklist's edges at once: Keel often abstains
    "large",  # over 50,000 USD: the policy asks a person
    "price_variance",
    "missing_po",
    "unclear",
    "tax_issue",
    "duplicate",
]


def sample_invoices(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """`n` valid invoice_classification cases, cycling through KINDS (stand-in for the ERP)."""
    rng = random.Random(seed)
    invoices = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        region, entity, currency, tax = ENTITIES[rng.randrange(len(ENTITIES))]
        invoice: dict[str, Any] = {
            "case_id": f"INV-{seed:02d}-{i + 1:05d}",
            "amount": round(rng.uniform(800, 20_000), 2),
            "currency": currency,
            "vendor_tenure_months": rng.randint(12, 120),
            "vendor_invoice_count_90d": rng.randint(1, 30),
            "po_present": True,
            "po_amount_delta_pct": 0.0,
            "gr_quantity_delta_pct": 0.0,
            "line_count": rng.randint(1, 12),
            "billed_tax_rate": tax,
            "expected_tax_rate": tax,
            "days_since_similar_invoice": round(rng.uniform(40, 200), 1),
            "similar_amount_match": False,
            "payment_terms_days": rng.choice([30, 45, 60]),
            "spend_category": rng.choice(["software", "hardware", "services", "logistics"]),
            "channel": rng.choice(["edi", "email_pdf", "portal", "api"]),
            "region": region,
            "entity": entity,
        }
        if kind == "new_vendor":
            invoice["vendor_tenure_months"] = rng.randint(0, 2)
        elif kind == "large":
            invoice["amount"] = round(rng.uniform(60_000, 250_000), 2)
        elif kind == "price_variance":
            invoice["po_amount_delta_pct"] = round(rng.uniform(6, 20), 2)
        elif kind == "missing_po":
            invoice.update(po_present=False, po_amount_delta_pct=None, gr_quantity_delta_pct=None)
        elif kind == "tax_issue":
            invoice["billed_tax_rate"] = tax + 3.0
        elif kind == "duplicate":
            invoice.update(days_since_similar_invoice=round(rng.uniform(1, 10), 1), similar_amount_match=True)
        elif kind == "unclear":
            invoice.update(
                similar_amount_match=True,
                days_since_similar_invoice=round(rng.uniform(14.0, 14.5), 1),
                po_amount_delta_pct=round(rng.uniform(3.0, 3.1), 2),
                gr_quantity_delta_pct=round(rng.uniform(2.0, 2.1), 2),
                billed_tax_rate=tax + round(rng.uniform(0.5, 0.55), 2),
            )
        invoices.append(invoice)
    return invoices


def checklist(invoice: dict[str, Any]) -> str:
    """Accounts payable's checklist: the exception path a careful clerk would choose."""
    gap = abs(invoice["billed_tax_rate"] - invoice["expected_tax_rate"])
    days = invoice["days_since_similar_invoice"]
    if not invoice["po_present"]:
        small = invoice["spend_category"] in ("travel", "facilities") and invoice["amount"] < 300
        if not small:
            return "missing_po"
    if invoice["similar_amount_match"] and days is not None and days <= 14:
        return "duplicate_suspect"
    if abs(invoice["po_amount_delta_pct"] or 0.0) > 3:
        return "price_variance"
    if abs(invoice["gr_quantity_delta_pct"] or 0.0) > 2:
        return "quantity_mismatch"
    return "tax_issue" if gap > 0.5 else "clean"


# Each user task's stand-in person: reads the task data, returns the form fields they submit.


def ap_reviewer(data: dict[str, Any]) -> dict[str, Any]:
    outcome = checklist(data["invoice"])
    said = data["decision"]["outcome"]
    reason = "reviewed abstention" if said is None else ("confirmed" if said == outcome else "override")
    return {
        "final_outcome": outcome,
        "reviewer": f"ap-{data['invoice']['region'].lower()}",
        "review_reason": reason,
    }


def finance_approver(data: dict[str, Any]) -> dict[str, Any]:
    # Over 15,000 USD, this controller wants AP to look at a new vendor's invoice first.
    invoice = data["invoice"]
    return {
        "approved": checklist(invoice) == "clean" and invoice["amount"] <= 15_000,
        "approver": "finance-controller",
    }


def auditor(data: dict[str, Any]) -> dict[str, Any]:
    region = data["invoice"]["region"]
    # A cross auditor works in another region than the invoice's.
    segment = region if data["decision"]["audit"]["pool"] == "local" else REGIONS[REGIONS.index(region) - 1]
    return {
        "audit_outcome": checklist(data["invoice"]),
        "auditor": f"auditor-{segment.lower()}",
        "auditor_segment": segment,
        "audit_reason": "audit",
    }


PEOPLE = {"review_invoice": ap_reviewer, "approve_posting": finance_approver, "audit_review": auditor}
"""The BPMN user task id -> the stand-in who completes it."""
