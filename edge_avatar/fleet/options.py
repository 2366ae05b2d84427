"""The ``fleet`` section of the root config (MQTT broker, telemetry cadence, offline queue)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FleetConfig:
    """How this device reports to and takes commands from the fleet."""

    enabled: bool = False  # off by default: messages go to a local JSON-lines file instead of a broker
