"""``edge-avatar perceive IMAGE... [--json]`` and ``edge-avatar models convert``.

Why this module exists: operators and tests need to see exactly what the
avatar perceives in a picture -- each face with its box, score, 478
landmarks, 52 blendshapes by ARKit name, head pose, gaze, emotion
probabilities and whether it is the active visitor; each hand with its box,
21 landmarks and gesture -- through the same config and the same pipeline as
the device (``VisionPerception.analyze_image``). ``models convert`` re-derives
``engines/`` from the pinned upstream packages (see ``perception.convert``).
Heavy imports happen inside the handlers, so building the parser stays free.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge_avatar.cli import add_config_args, config_from_args, progress

EXIT_OK, EXIT_FAILED = 0, 1


def add_subcommands(subparsers: Any) -> None:
    p = subparsers.add_parser("perceive", help="run vision perception on images and print what it sees")
    add_config_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--json", action="store_true", help="print JSON (one document with a result per image)")
    p.add_argument("--landmarks", action="store_true", help="include every face landmark (478 x 3) in the JSON")
    p.add_argument("--draw", metavar="DIR", default=None,
                   help="also write each image with boxes, mesh, head-pose axes and gestures drawn, as DIR/NAME.png")
    p.set_defaults(func=cmd_perceive)

    m = subparsers.add_parser("models", help="perception models in engines/")
    models_sub = m.add_subparsers(dest="models_command", required=True)
    convert = models_sub.add_parser("convert", help="re-derive engines/*.onnx + manifest.json from the pinned "
                                                    "upstream packages (needs tf2onnx in --converter-python)")
    from edge_avatar.perception.convert import add_arguments  # noqa: PLC0415 - argparse only, no heavy imports

    add_arguments(convert)
    convert.set_defaults(func=cmd_models_convert)


def _image_entry(path: str, result: Any, with_landmarks: bool) -> dict[str, Any]:
    entry = {"image": path, **result.to_dict(with_landmarks=with_landmarks)}
    entry["width"], entry["height"] = result.image_size
    for key in ("pts_ns", "seq", "image_size"):
        entry.pop(key, None)
    return entry


def cmd_perceive(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from edge_avatar.perception.material import MaterialUnavailable, read_rgb  # noqa: PLC0415
    from edge_avatar.perception.pipeline import VisionPerception  # noqa: PLC0415

    stage = VisionPerception.from_config(config)
    results: list[dict[str, Any]] = []
    failed = False
    try:
        for i, path in enumerate(args.images, 1):
            progress(f"[{i}/{len(args.images)}] {path}")
            try:
                image = read_rgb(path)
            except MaterialUnavailable as exc:
                results.append({"image": path, "frame_valid": False, "reason": f"unreadable: {exc}",
                                "faces": [], "hands": []})
                failed = True
                continue
            result = stage.analyze_image(image)
            results.append(_image_entry(path, result, args.landmarks))
            if args.draw:
                from edge_avatar.perception.preview import draw_result, save_rgb_png  # noqa: PLC0415

                out_dir = Path(args.draw)
                out_dir.mkdir(parents=True, exist_ok=True)
                save_rgb_png(str(out_dir / (Path(path).stem + ".png")), draw_result(image, result))
    finally:
        stage.close()
    if args.json:
        print(json.dumps({"images": results}, indent=2))
    else:
        for entry in results:
            _print_text(entry)
    return EXIT_FAILED if failed else EXIT_OK


def _print_text(entry: dict[str, Any]) -> None:
    print(f"{entry['image']}: {entry['reason']}, {len(entry['faces'])} face(s), {len(entry['hands'])} hand(s)")
    for face in entry["faces"]:
        role = "active visitor" if face["active_visitor"] else "bystander"
        line = f"  face {face['track_id']} ({role}) box {face['box']} score {face['score']:.2f} " \
               f"{face['distance_m']:.2f} m ({face['distance_source']})"
        print(line)
        if "head_pose_deg" in face:
            pose = face["head_pose_deg"]
            gaze = face["gaze"]
            print(f"    head yaw {pose['yaw']:+.1f} pitch {pose['pitch']:+.1f} roll {pose['roll']:+.1f} deg; "
                  f"gaze {gaze['yaw_deg']:+.1f},{gaze['pitch_deg']:+.1f} deg, looking {gaze['looking_at_screen']:.2f}")
            top = sorted(face["blendshapes"].items(), key=lambda kv: -kv[1])[:5]
            print("    blendshapes " + ", ".join(f"{k} {v:.2f}" for k, v in top))
            print("    emotion " + ", ".join(f"{k} {v:.2f}" for k, v in face["emotion"].items()))
    for hand in entry["hands"]:
        print(f"  hand {hand['track_id']} {hand['handedness']} box {hand['box']} gesture {hand['gesture']} "
              f"({hand['extended_count']} fingers extended)")


def cmd_models_convert(args: argparse.Namespace) -> int:
    from edge_avatar.perception.convert import run_from_args  # noqa: PLC0415

    return run_from_args(args, progress)


if __name__ == "__main__":  # pragma: no cover - `edge-avatar perceive` is the entry point
    parser = argparse.ArgumentParser(prog="edge-avatar")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommands(sub)
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
