"""Keep ``deploy/vinsight.env.example`` in step with the server's settings classes.

Every environment variable a server component reads comes from a pydantic-settings class:
``IngestSettings`` (ingest/settings.py), ``AnalyticsSettings`` (analytics/settings.py),
``PortalSettings`` (portal_api/settings.py) and, for load tests, ``SimulatorSettings``
(vinsight/simulate_cli.py). This script derives each field's variable names (its
``VINSIGHT_<ROOM>_*`` name and shared aliases such as ``VINSIGHT_DB_URL``), default and description
from those classes and

* ``python deploy/check_env_example.py`` checks the example: every variable documented with its
  current default as ``#NAME=default``, and no ``VINSIGHT_*`` name that nothing reads (exit 1 and a
  list of differences otherwise; tests/test_deploy.py runs the same check);
* ``python deploy/check_env_example.py --write`` regenerates the file.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "vinsight.env.example"

# (import path, class, section title, what reads it)
SETTINGS_CLASSES: tuple[tuple[str, str, str, str], ...] = (
    ("ingest.settings", "IngestSettings", "Ingest: workers, schema, storage policy, metrics", "ingest"),
    ("analytics.settings", "AnalyticsSettings", "Analytics: the `vinsight analytics run --loop` scheduler",
     "analytics"),
    ("portal_api.settings", "PortalSettings", "Portal: API and web portals (`vinsight portal serve`)", "portal"),
    ("vinsight.simulate_cli", "SimulatorSettings", "Simulator: `vinsight simulate` load tests (not a service)",
     "simulate"),
)


@dataclass
class Setting:
    names: list[str]          # every VINSIGHT_* name that sets it, the component's own first
    default: str
    description: str
    readers: list[str] = field(default_factory=list)


def _settings_class(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)


def env_names(cls: Any, field_name: str, info: Any) -> list[str]:
    """The environment variables pydantic-settings reads for one field (aliases replace the prefix)."""
    alias = info.validation_alias
    if alias is None:
        prefix = cls.model_config.get("env_prefix", "")
        return [f"{prefix}{field_name}".upper()]
    choices = getattr(alias, "choices", None) or [alias]
    names = [c.upper() for c in choices if isinstance(c, str) and c.upper().startswith("VINSIGHT_")]
    own = [n for n in names if n.startswith(cls.model_config.get("env_prefix", "").upper())]
    return own + [n for n in names if n not in own]


def render_default(info: Any) -> str:
    from pydantic_core import PydanticUndefined

    if info.default_factory is not None:
        return ""
    value = info.default
    if value is None or value is PydanticUndefined:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def collect() -> dict[str, list[tuple[str, Setting]]]:
    """Per section: (variable name, setting) for the component's own names; shared names separately."""
    sections: dict[str, list[tuple[str, Setting]]] = {}
    shared: dict[str, Setting] = {}
    for module, cls_name, title, reader in SETTINGS_CLASSES:
        cls = _settings_class(module, cls_name)
        prefix = cls.model_config.get("env_prefix", "").upper()
        rows: list[tuple[str, Setting]] = []
        for fname, info in cls.model_fields.items():
            names = env_names(cls, fname, info)
            desc = (info.description or fname.replace("_", " ")).strip()
            if info.default_factory is not None:
                desc += " (unset: a random value per process)"
            setting = Setting(names, render_default(info), desc, [reader])
            own = [n for n in names if n.startswith(prefix)]
            others = [n for n in names if not n.startswith(prefix)]
            # pydantic takes the first alias that is set: the order says which name wins.
            order = [c.upper() for c in getattr(info.validation_alias, "choices", []) if isinstance(c, str)]
            own_first = bool(order) and bool(own) and order.index(own[0]) < min(
                (order.index(n) for n in others), default=len(order))
            for n in others:
                if n in shared:
                    shared[n].readers.append(reader)
                else:
                    shared[n] = Setting([n], setting.default, desc, [reader])
            for n in own:
                note = ""
                if others:
                    note = (f"; overrides {', '.join(others)} for {reader}" if own_first
                            else f"; {', '.join(others)} wins over it when both are set")
                rows.append((n, Setting([n], setting.default, desc + note, [reader])))
        sections[title] = rows
    sections = {"Shared by the server components (one value for all of them)": sorted(shared.items()), **sections}
    return sections


HEADER = """\
# VINsight server settings: every VINSIGHT_* variable the server components read, with its default.
# Generated from the settings classes by `python deploy/check_env_example.py --write`; the same script
# (and tests/test_deploy.py) fails when a setting is missing here or its default changed.
#
# Install it as deploy/vinsight.env (Docker Compose; also linked as deploy/.env, see compose.yaml) or
# /etc/vinsight/vinsight.env (systemd units in deploy/systemd). Defaults are commented out: uncomment
# and change what your installation needs. The block at the end holds the values every production
# install sets. One KEY=value per line, no quotes, no inline comments (systemd and Compose both
# read this file). Generate secrets with `openssl rand -hex 32` (URL-safe: they go into URLs).
# The in-car agent's settings are in hardware/agent.env.example.
"""

DEPLOYMENT = """\
# =====================================================================================================
# Deployment: read by Compose, the containers' entry points or the libraries, not by VINsight itself
# =====================================================================================================
# TimescaleDB superuser password; compose.yaml builds VINSIGHT_DB_URL from it
#POSTGRES_PASSWORD=
# Grafana's admin login, and the password of its read-only database role (timescaledb/grafana-reader.sql)
#GRAFANA_ADMIN_PASSWORD=
#GRAFANA_DB_PASSWORD=
# Public name of the portal; Caddy gets its certificate from Let's Encrypt (localhost: a local CA)
#PORTAL_DOMAIN=localhost
# Contact address for the ACME account
#ACME_EMAIL=
# Memory and CPUs timescaledb-tune sizes PostgreSQL for at first start
#TIMESCALEDB_MEMORY=8GB
#TIMESCALEDB_CPUS=4
# Tag of the vinsight-server image compose.yaml builds and runs
#IMAGE_TAG=latest
# Where numba keeps compiled kernels (must be writable; the image and the units set it)
#NUMBA_CACHE_DIR=/var/cache/vinsight/numba
# uvicorn: proxies whose X-Forwarded-For the portal trusts (compose.yaml: *, the portal is only reachable via Caddy)
#FORWARDED_ALLOW_IPS=127.0.0.1
"""

TYPICAL = """\
# =====================================================================================================
# Every production install sets these (replace each change-me)
# =====================================================================================================
POSTGRES_PASSWORD=change-me
GRAFANA_ADMIN_PASSWORD=change-me
GRAFANA_DB_PASSWORD=change-me
PORTAL_DOMAIN=portal.example.net
ACME_EMAIL=ops@example.net
# Bare metal: the database and the broker's internal listener. compose.yaml overrides these three with
# its own service names (and the password above).
VINSIGHT_DB_URL=postgresql://vinsight:change-me@127.0.0.1:5432/vinsight
VINSIGHT_MQTT_HOST=127.0.0.1
VINSIGHT_MQTT_PORT=1883
# The ingest service user; `vinsight device broker-files` puts it into the broker's password/ACL files
VINSIGHT_INGEST_MQTT_USERNAME=ingest
VINSIGHT_INGEST_MQTT_PASSWORD=change-me
# Production brokers know every car: refuse data from ids not added with `vinsight device add`
VINSIGHT_INGEST_REQUIRE_PROVISIONED=true
# Shared by every portal process, so tokens survive restarts and any instance accepts them
VINSIGHT_PORTAL_JWT_SECRET=change-me
"""


def render() -> str:
    out = [HEADER]
    for title, rows in collect().items():
        out.append("\n# " + "=" * 101 + f"\n# {title}\n# " + "=" * 101 + "\n")
        for name, s in rows:
            readers = f" (read by: {', '.join(s.readers)})" if title.startswith("Shared") else ""
            out.append(f"# {s.description}{readers}\n#{name}={s.default}\n")
    out.append("\n" + DEPLOYMENT + "\n" + TYPICAL)
    return "".join(out)


def expected_lines() -> dict[str, str]:
    """Variable name -> the ``#NAME=default`` line documenting it."""
    return {name: f"#{name}={s.default}" for rows in collect().values() for name, s in rows}


def check(text: str) -> list[str]:
    """Differences between an example file and the settings classes (empty when in step)."""
    problems = []
    lines = set(text.splitlines())
    expected = expected_lines()
    for name, line in expected.items():
        if line not in lines:
            documented = [x for x in lines if re.match(rf"^#?{re.escape(name)}=", x)]
            if documented:
                problems.append(f"{name}: documented as {sorted(documented)[0]!r}, the default is now {line!r}")
            else:
                problems.append(f"{name}: missing (expected {line!r})")
    for m in re.finditer(r"^#?(VINSIGHT_[A-Z0-9_]+)=", text, re.M):
        if m.group(1) not in expected:
            problems.append(f"{m.group(1)}: no settings class reads it")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="regenerate deploy/vinsight.env.example")
    ap.add_argument("--file", type=Path, default=EXAMPLE)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.write:
        args.file.write_text(render())
        print(f"wrote {args.file} ({len(expected_lines())} variables)")
        return 0
    problems = check(args.file.read_text())
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"{args.file}: {len(problems)} problem(s); regenerate with --write", file=sys.stderr)
        return 1
    print(f"{args.file}: all {len(expected_lines())} variables documented with their defaults")
    return 0


if __name__ == "__main__":
    sys.exit(main())
