"""Exits 0 when the weir brokers whose admin ports are given all name the
same controller and know every one of them (`/api/status`, `cluster`)."""

import json
import sys
import urllib.request

views = []
for port in sys.argv[1:]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=1) as r:
            views.append(json.load(r).get("cluster") or {})
    except Exception:  # not up yet
        sys.exit(1)
controllers = {v.get("controller") for v in views}
ready = (
    len(controllers) == 1
    and None not in controllers
    and all(len(v.get("brokers") or []) == len(views) for v in views)
)
sys.exit(0 if ready else 1)
