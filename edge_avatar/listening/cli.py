"""``edge-avatar transcribe WAV --json``: the listening pipeline on a recording, for operators and tests.

Why this module exists: the issue's command-line contract. A recording goes
through exactly what a live microphone goes through (input checks,
resampling to 16 kHz, VAD, segmenter, recognizer) and the speech segments
come out with start/end in seconds and their text. A file that is not
speech, silent or clipping is reported in ``warnings`` (exit 0: the file was
heard); a file that cannot be read exits 1 with what to do about it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

log = logging.getLogger(__name__)


def cmd_transcribe(args: argparse.Namespace) -> int:
    from edge_avatar.cli import EXIT_FAILED, EXIT_OK, config_from_args, progress  # noqa: PLC0415
    from edge_avatar.listening.asr import RecognizerUnavailable, load_recognizer  # noqa: PLC0415
    from edge_avatar.listening.offline import AudioInputError, read_audio, transcribe_samples  # noqa: PLC0415
    from edge_avatar.listening.options import ListeningConfig  # noqa: PLC0415
    from edge_avatar.listening.vad import VadUnavailable  # noqa: PLC0415

    root = config_from_args(args)
    config = getattr(root, "listening", None) or ListeningConfig()
    try:
        samples, rate = read_audio(args.wav)
    except AudioInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    name = args.recognizer or config.asr_recognizer
    progress(f"transcribe: {args.wav} ({len(samples) / rate:.1f} s at {rate} Hz) with {name}")
    try:
        recognizer = load_recognizer(config, args.recognizer)
        result = transcribe_samples(samples, rate, config, recognizer=recognizer)
    except (RecognizerUnavailable, VadUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    document = {"file": str(args.wav), **result.to_json()}
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        for segment in result.segments:
            print(f"[{segment.start_s:7.2f} - {segment.end_s:7.2f}] {segment.text}")
        for warning in result.warnings:
            print(f"warning: {warning}")
    return EXIT_OK


def add_subcommands(subparsers) -> None:
    from edge_avatar.cli import add_config_args  # noqa: PLC0415

    p = subparsers.add_parser("transcribe", help="speech segments (start/end seconds) and text of a recording")
    add_config_args(p)
    p.add_argument("wav", help="a recording (PCM WAV of any rate and width; other formats through ffmpeg)")
    p.add_argument("--json", action="store_true", help="print JSON: segments, text, warnings, input report")
    p.add_argument("--recognizer", choices=("whisper", "pocketsphinx"), default=None,
                   help="override listening.asr_recognizer")
    p.set_defaults(func=cmd_transcribe)
