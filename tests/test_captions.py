"""Word-timed captions: the words follow the voice, a cut-off sentence vanishes, the band is drawn sharp."""

from __future__ import annotations

import numpy as np
import pytest

from edge_avatar.config import DisplayConfig
from edge_avatar.frames import RenderedFrame
from edge_avatar.outputs.captions import HOLD_AFTER_MS, CaptionedSink, caption_at, planner_captions
from edge_avatar.planner.inputs import PlannerInputs, build_track

cv2 = pytest.importorskip("cv2", reason="captions are drawn with OpenCV")

MS = 1_000_000
WORDS = (("Radiology", 40.0, 600.0), ("is", 620.0, 700.0), ("on", 720.0, 800.0), ("the", 820.0, 880.0),
         ("second", 900.0, 1250.0), ("floor.", 1270.0, 1700.0))


def sentence(start_ns: int, index: int = 0, words=WORDS):
    env = np.full(180, 0.5, np.float32)
    phonemes = [("a", s, e, 0) for _, s, e in words]
    return build_track(index, start_ns, " ".join(w for w, _, _ in words), phonemes, list(words), env, 1800.0)


class Recorder:
    uri = "null://"

    def __init__(self):
        self.frames = []
        self.closed = False

    def present(self, frame):
        self.frames.append(frame)

    def audio_tap(self, samples, first_sample):
        pass

    def close(self):
        self.closed = True
        return {"path": None}


def test_words_are_spoken_in_time_and_the_caption_is_held_then_cleared():
    track = sentence(1000 * MS)
    assert caption_at([track], 900 * MS) is None                          # before the sentence
    assert caption_at([track], 1000 * MS).spoken == 0                      # first word not heard yet
    assert caption_at([track], 1050 * MS).spoken == 1
    at_second = caption_at([track], 1000 * MS + 950 * MS)
    assert at_second.words[at_second.spoken - 1] == "second" and at_second.text.startswith("Radiology is")
    held = caption_at([track], int(1000 * MS + (1700 + HOLD_AFTER_MS - 10) * MS))
    assert held is not None and held.spoken == len(WORDS)
    assert caption_at([track], int(1000 * MS + (1700 + HOLD_AFTER_MS + 10) * MS)) is None
    # The next sentence replaces the previous one as soon as it starts.
    nxt = sentence(3000 * MS, 1, (("Goodbye!", 30.0, 500.0),))
    assert caption_at([track, nxt], 3100 * MS).words == ("Goodbye!",)


def test_barge_in_removes_the_unheard_rest_from_the_caption():
    inputs = PlannerInputs()
    inputs.add_speech(sentence(1000 * MS))
    inputs.add_speech(sentence(3000 * MS, 1))
    source = planner_captions(inputs)
    assert source(3100 * MS) is not None
    inputs.clear_speech(1300 * MS)                      # the visitor interrupted 300 ms into the first
    assert source(3100 * MS) is None                    # the second sentence was never heard
    cut = source(1300 * MS)
    assert cut is not None and cut.spoken == 1 and cut.words == ("Radiology",)


def test_the_sink_draws_the_band_at_display_size_and_passes_plain_frames_through():
    display = DisplayConfig(width_px=640, height_px=480)
    inner = Recorder()
    track = sentence(0)
    sink = CaptionedSink(inner, lambda pts: caption_at([track], pts), display.width_px, display.height_px,
                         display.background_rgb)
    face = np.full((256, 256, 3), 90, np.uint8)
    sink.present(RenderedFrame(950 * MS, 1, face))           # captioned: letterboxed and drawn
    sink.present(RenderedFrame(9000 * MS, 2, face))          # long after: untouched
    captioned, plain = inner.frames
    assert captioned.image.shape == (480, 640, 3) and plain.image is face
    band = captioned.image[int(480 * 0.8):]
    assert (band.max(axis=2) >= 250).sum() > 50               # white (spoken) words
    grey = (np.abs(band.astype(int) - (150, 156, 168)).max(axis=2) <= 12).sum()
    assert grey > 50                                          # grey (pending) words
    assert np.array_equal(captioned.image[:200, 200:440], np.full((200, 240, 3), 90, np.uint8)[:200])
    assert sink.close()["captions_drawn"] == 1 and inner.closed
