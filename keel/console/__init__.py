"""The review console: the pages risk teams and auditors read under /console (issue 24).

A floor of its own between the command line and the three middle packages: it presents what
serving, monitoring and the decision log hold, so it may import them; none of them imports it.
`keel serve` (keel/cli) mounts it into the service's ASGI app; the gate (serving/gate.py)
authorises every console route from the route table and the session cookie before it gets here.
"""

from keel.console.app import console_app
from keel.console.monitoring_source import MonitoringSource, StoredRuns

__all__ = ["MonitoringSource", "StoredRuns", "console_app"]
