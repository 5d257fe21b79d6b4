"""Events out: CloudEvents about alias moves, monitor verdicts and canary rollbacks, delivered
from the decision log's outbox to signed webhooks (docs/events.md)."""
