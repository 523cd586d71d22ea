"""Act on driftwire alerts: read `driftwire alerts --follow --json` from stdin.

    driftwire alerts --config driftwire.yaml --follow --json | python page_on_critical.py

Prints one line per alert that needs a human (critical and firing) and keeps the set
of alerts currently firing, de-duplicated by alert id (a replay or a retried publish
re-sends the same id).
"""

import json
import sys

firing: dict[tuple, dict] = {}
seen: set[str] = set()
for line in sys.stdin:
    alert = json.loads(line)
    if alert["alert_id"] in seen:
        continue  # at-least-once delivery: the same alert may arrive twice
    seen.add(alert["alert_id"])
    key = (alert["model_id"], alert["kind"], alert["detector"], alert["feature"], alert["segment"])
    if alert["status"] == "firing":
        firing[key] = alert
        if alert["severity"] == "critical":
            where = alert["feature"] or "model"
            print(
                f"PAGE {alert['model_id']} {alert['kind']} on {where}: "
                f"{alert['statistic']}={alert['value']:.3g}",
                flush=True,
            )
    else:
        firing.pop(key, None)
        print(f"RESOLVED {alert['model_id']} {alert['kind']} on {alert['feature']}", flush=True)
