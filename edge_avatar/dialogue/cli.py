"""``edge-avatar ask`` and ``edge-avatar memory erase``: the brain from the command line.

Why this module exists: a site writing its knowledge file needs to see, in
seconds and without a kiosk, what the avatar would answer, which entry
matched and how sure it was; an operator needs one command that erases
long-term memory. ``--site`` is the usual site config (the hospital example's
site.yaml is one: its ``site.knowledge_file`` and ``site.persona_file`` name
the knowledge and persona), so ``ask`` answers exactly as the device would;
``--knowledge`` / ``--persona`` override the files for quick edits.

Several questions in one call are one visit (follow-ups and names carry over).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from edge_avatar.cli import EXIT_OK, add_config_args, config_from_args, progress


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ask", help="answer questions as the avatar would (one visit), print the reply")
    add_config_args(p)
    p.add_argument("questions", nargs="+", metavar="QUESTION", help="what the visitor says (several: one visit)")
    p.add_argument("--knowledge", default=None, metavar="FILE", help="knowledge YAML (default: from the config)")
    p.add_argument("--persona", default=None, metavar="FILE", help="persona YAML (default: from the config)")
    p.add_argument("--llm-url", default=None, metavar="URL",
                   help="OpenAI-compatible chat endpoint for the LLM tier (default: dialogue.llm_endpoint_url)")
    p.add_argument("--llm-budget-ms", type=int, default=None, metavar="MS", help="LLM time budget")
    p.add_argument("--speak", default=None, metavar="OUT.wav",
                   help="also synthesise the replies (persona's voice) to this WAV, with OUT.json timelines")
    p.add_argument("--json", action="store_true", help="print JSON (an object; a list for several questions)")
    p.set_defaults(func=cmd_ask)

    p = subparsers.add_parser("memory", help="long-term dialogue memory")
    memory_sub = p.add_subparsers(dest="memory_command", required=True)
    erase = memory_sub.add_parser("erase", help="erase remembered visitor facts (all, or one visitor)")
    add_config_args(erase)
    erase.add_argument("--visitor", default=None, metavar="KEY", help="erase only this visitor key")
    erase.set_defaults(func=cmd_memory_erase)


def cmd_ask(args: argparse.Namespace) -> int:
    from edge_avatar.dialogue import build_dialogue, dialogue_config, reply_summary  # noqa: PLC0415

    root = config_from_args(args)
    config = dialogue_config(root)
    changes = {}
    if args.llm_url is not None:
        changes["llm_endpoint_url"] = args.llm_url
    if args.llm_budget_ms is not None:
        changes["llm_time_budget_ms"] = args.llm_budget_ms
    if changes:
        config = dataclasses.replace(config, **changes)
        problems = config.validate()
        if problems:
            from edge_avatar.config import ConfigError  # noqa: PLC0415

            raise ConfigError("--llm-url", problems[0][0], problems[0][1])
    base_dirs = (Path(args.site).resolve().parent,) if args.site else ()
    dialogue = build_dialogue(root, config, knowledge_file=args.knowledge, persona_file=args.persona,
                              base_dirs=base_dirs)
    try:
        dialogue.start_visit()
        replies = [dialogue.respond(q) for q in args.questions]
        if args.speak:
            _speak(dialogue, replies, args.speak, root)
    finally:
        dialogue.close()
    summaries = [reply_summary(r) for r in replies]
    if args.json:
        print(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2))
    else:
        for question, s in zip(args.questions, summaries):
            where = f"{s['entry_id']} ({s['confidence']:.2f})" if s["entry_id"] else \
                f"no entry ({s['confidence']:.2f}, {s['kind']})"
            print(f"Q: {question}\nA: {s['answer']}\n   [{s['tier']}: {where}, valence {s['affect']['valence']:+.2f}, "
                  f"arousal {s['affect']['arousal']:+.2f}]" + (f"\n   LLM fallback: {s['fallback_reason']}"
                                                              if s["fallback_reason"] else ""))
    return EXIT_OK


def _speak(dialogue, replies, out_path: str, root) -> None:
    import numpy as np  # noqa: PLC0415

    from edge_avatar.speech import open_tts, write_wav  # noqa: PLC0415

    sample_rate_hz = root.audio_output.sample_rate_hz
    tts = open_tts(dialogue.persona, sample_rate_hz, dialogue.config)
    audio: list[np.ndarray] = []
    timeline = []
    offset_ms = 0.0
    try:
        for reply in replies:
            for segment in tts.stream(reply.text):
                audio.append(segment.audio)
                timeline.append(segment.to_json(offset_ms=offset_ms))
                offset_ms += segment.duration_ms
    finally:
        tts.close()
    samples = np.concatenate(audio) if audio else np.zeros(0, dtype=np.float32)
    write_wav(out_path, samples, sample_rate_hz)
    Path(out_path).with_suffix(".json").write_text(json.dumps({"engine": tts.name, "segments": timeline},
                                                              indent=1) + "\n", encoding="utf-8")
    progress(f"speech: {len(samples) / sample_rate_hz:.2f} s with {tts.name} -> {out_path} "
             f"(+ {Path(out_path).with_suffix('.json')})")


def cmd_memory_erase(args: argparse.Namespace) -> int:
    from edge_avatar.dialogue import dialogue_config  # noqa: PLC0415
    from edge_avatar.dialogue.memory import LongTermMemory  # noqa: PLC0415

    root = config_from_args(args)
    config = dialogue_config(root)
    path = Path(root.site.state_dir).expanduser() / config.memory_db_file
    if not path.exists():
        progress(f"no long-term memory at {path}: nothing to erase")
        print(json.dumps({"erased": 0, "path": str(path)}))
        return EXIT_OK
    memory = LongTermMemory(path, config.memory_retention_days)
    try:
        erased = memory.erase(args.visitor)
    finally:
        memory.close()
    print(json.dumps({"erased": erased, "path": str(path), "visitor": args.visitor}))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover - use `edge-avatar ask`
    sys.exit("use: edge-avatar ask ...")
