"""What a running avatar does for each fleet command (the ``CommandHandlers`` of edge_avatar.fleet).

Why this module exists: the fleet package validates, authorises and answers
commands but knows nothing of the media pipeline; the session knows the
pipeline but nothing of MQTT. These handlers are the seam. They run on the
fleet's command thread and only queue work or flip a setting: none of them
waits on the tick, the speaker or a model.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from edge_avatar import __version__
from edge_avatar.fleet.commands import EXIT_RESTART_REQUESTED, CommandError, Reply

log = logging.getLogger(__name__)


class SessionCommandHandlers:
    def __init__(self, session: Any, build_command: list[str] | None = None, restart_after_build: bool = True):
        self.session = session
        self.restart_requested = False
        # nice: an engine build must not take the CPU from the running avatar
        self.build_command = build_command or ["nice", "-n", "10", sys.executable, "-m", "edge_avatar.cli"]
        self.restart_after_build = restart_after_build
        self.last_build: dict[str, Any] | None = None
        self._rebuild: threading.Thread | None = None
        self._lock = threading.Lock()

    def ping(self) -> dict[str, Any]:
        loop = self.session.loop
        return {"pong": True, "version": __version__, "board": self.session.config.board.name,
                "frames_rendered": loop.counters.frames_rendered if loop else 0}

    def say(self, text: str, interrupt: bool) -> dict[str, Any]:
        conversation = self.session.conversation
        if conversation is None:
            raise CommandError("unavailable", "this device runs without speech (no microphone/conversation)")
        turn_id = conversation.say(text, interrupt=interrupt)
        return {"queued": True, "turn_id": turn_id, "interrupted": interrupt}

    def set_persona(self, persona: str) -> dict[str, Any]:
        """Switch to ``<persona>.yaml`` beside the current persona file (the site's persona library)."""
        from pathlib import Path  # noqa: PLC0415

        from edge_avatar.dialogue import dialogue_config  # noqa: PLC0415
        from edge_avatar.dialogue.persona import PersonaError, load_persona  # noqa: PLC0415
        from edge_avatar.speech import open_tts  # noqa: PLC0415

        conversation = self.session.conversation
        if conversation is None:
            raise CommandError("unavailable", "this device runs without speech (no microphone/conversation)")
        cfg = self.session.config
        current = cfg.dialogue.persona_file or cfg.site.persona_file
        library = Path(current).expanduser().parent if current else Path(".")
        path = library / f"{persona}.yaml"
        try:
            loaded = load_persona(path)  # the name pattern was checked by the command schema
            tts = open_tts(loaded, cfg.audio_output.sample_rate_hz, dialogue_config(cfg))
        except PersonaError as exc:
            raise CommandError("invalid_persona", str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - e.g. the persona's voice is not installed
            raise CommandError("invalid_persona", f"{path}: {exc}") from None
        conversation.dialogue.persona = loaded
        conversation.tts = tts  # the next reply speaks with the new voice; the current one finishes
        if conversation.motion is not None:  # the face takes on the new persona's manner too
            conversation.motion.set_persona(loaded.persona_vector())
        if self.session.fleet is not None:
            self.session.fleet.update_status(persona=loaded.name)
        return {"persona": loaded.name, "file": str(path)}

    def reload_config(self) -> Reply:
        self.restart_requested = True
        return Reply({"reloading": True, "how": "clean restart with the new config",
                      "exit_status": EXIT_RESTART_REQUESTED}, then=self._request_restart)

    def set_volume(self, volume: float) -> dict[str, Any]:
        speaker = self.session.speaker
        if speaker is None:
            raise CommandError("unavailable", "no speaker is open")
        speaker.set_volume(volume)
        return {"volume": speaker.volume}

    def rebuild_engines(self, force: bool) -> dict[str, Any]:
        """Run ``edge-avatar engines build`` in a separate, low-priority process; restart onto the result.

        The build never runs in this process (it would compete with the tick for the GIL); the answer
        comes at once, an ``engines_rebuilt`` event follows with the exit status, and a successful
        build restarts the service (exit 75) so the new engines are loaded and warmed before READY.
        """
        with self._lock:
            if self._rebuild is not None and self._rebuild.is_alive():
                raise CommandError("busy", "an engine build is already running")
            command = [*self.build_command, "engines", "build", "--board", self.session.config.board.name]
            if force:
                command.append("--force")
            self._rebuild = threading.Thread(target=self._run_build, args=(command,), name="engines-rebuild",
                                             daemon=True)
            self._rebuild.start()
        return {"started": True, "force": force, "then": "restart when the build succeeds"}

    def _run_build(self, command: list[str]) -> None:
        start_s = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
            rc, tail = done.returncode, (done.stderr or "")[-500:]
        except (OSError, subprocess.TimeoutExpired) as exc:
            rc, tail = -1, str(exc)
        self.last_build = {"exit_status": rc, "seconds": round(time.monotonic() - start_s, 1)}
        fleet = self.session.fleet
        if fleet is not None:
            fleet.event("engines_rebuilt", **self.last_build, **({} if rc == 0 else {"error": tail}))
        if rc == 0 and self.restart_after_build:
            self._request_restart()

    def restart(self, reason: str) -> Reply:
        self.restart_requested = True
        log.warning("restart requested by the fleet: %s", reason)
        return Reply({"restarting": True, "exit_status": EXIT_RESTART_REQUESTED}, then=self._request_restart)

    def forget_memory(self, scope: str) -> dict[str, Any]:
        conversation = self.session.conversation
        if conversation is None:
            return {"forgotten": 0, "scope": scope}
        dialogue = conversation.dialogue
        dialogue.end_visit()  # "conversation": what this visitor said is forgotten now
        erased = dialogue.erase_memory(None) if scope == "all" else 0  # "all": long-term memory too
        return {"forgotten": True, "scope": scope, "long_term_records_erased": erased}

    def _request_restart(self) -> None:
        """Stop the loop cleanly (the MP4 and report are finalised); the CLI then exits 75."""
        self.session.restart_exit_status = EXIT_RESTART_REQUESTED
        self.session.stop()
        if os.environ.get("EDGE_AVATAR_RESTART_SIGNAL") == "1":  # pragma: no cover - for supervisors without 75
            os.kill(os.getpid(), signal.SIGTERM)
