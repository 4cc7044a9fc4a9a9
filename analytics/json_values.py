"""Results as JSON values: the one converter analytics and the portal's data export share.

What a result may hold, and what it becomes:

* numpy scalars → Python numbers (``np.float64(3.0)`` → ``3.0``);
* non-finite floats → ``null``: JSON has no NaN, and a figure that could not be computed is
  absent, not the string ``"nan"``;
* dates and times → ISO 8601 text; bytes → hex;
* dataclasses → their fields, DataFrames → their records, mappings and sequences → recursively;
* anything else unchanged (``str``, ``int``, ``bool``, ``None``).

Device input is another matter: ingest keeps what a device sent, oddities and all, for the
dead-letter record (``ingest.pipeline.jsonable`` turns a NaN into the text ``"nan"``, escapes NUL
and caps the depth of hostile nesting). That is why there are two converters and not one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pandas as pd


def json_value(value: Any) -> Any:
    """``value`` as something ``json.dumps`` / psycopg's ``Jsonb`` writes without complaint."""
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_value(dataclasses.asdict(value))
    if isinstance(value, pd.DataFrame):
        return json.loads(value.to_json(orient="records", date_format="iso"))
    return value
