"""Fleet: MQTT status, telemetry, events and commands; systemd service integration.

Why a package of its own: a device reports to an operator and takes
commands from one, and runs unattended under systemd, without any of it
being able to stall the face. Importing this package is free (``config.py``
imports ``options`` on every machine); paho-mqtt is imported only by ``mqtt``,
and only when a broker is configured.

- ``options``   the ``fleet`` config section
- ``messages``  topics, payload envelopes, the privacy filter
- ``commands``  command schemas, authorisation, ``CommandHandlers`` (what a session implements)
- ``spool``     the bounded on-disk offline queue (SQLite)
- ``mqtt``      the one module that uses paho: a self-healing MQTT 5 connection
- ``agent``     ``FleetAgent``: the device side (what a session creates)
- ``telemetry`` ``TelemetrySource``: loop stats + host + Jetson sensors
- ``console``   the operator side (``edge-avatar fleet ls|watch|send``)
- ``systemd``   sd_notify and the frame-driven ``Watchdog``
- ``install``   ``edge-avatar service install``
- ``mosquitto`` ACL/broker config rendering and a local broker for tests and ``bench fleet``

Wiring in a session::

    agent = FleetAgent(config, handlers=my_handlers, telemetry=TelemetrySource(session.report),
                       status={"persona": ..., "engines": {...}})
    agent.start()                                   # never waits for the broker
    agent.event("turn_done", turn_id=3, response_latency_ms=612.0)   # any thread, never blocks
    notifier = SystemdNotifier.from_env(); notifier.ready("running")
    watchdog = Watchdog(lambda: loop.frames_advanced, notifier); watchdog.start()
    ...
    watchdog.stop(); notifier.stopping(); agent.stop()
"""
