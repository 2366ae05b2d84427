"""Fleet: MQTT status, telemetry, events and commands; systemd service integration."""
