"""The media clock, the speaker queue and the bounded queues' overflow policies."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_avatar.clock import AcceleratedTimeBase, ManualTimeBase, MediaClock
from edge_avatar.frames import ControlMessage
from edge_avatar.outputs.audio import AudioOutputError, SampleQueue, VirtualAudioOutput, open_audio_output
from edge_avatar.runtime.queues import BoundedQueue, OverflowPolicy, QueueEmpty, QueueFull


def test_media_clock_follows_speaker_samples_exactly():
    base = ManualTimeBase()
    speaker = VirtualAudioOutput(base, sample_rate_hz=16000, block_ms=10)
    speaker.start()
    clock = MediaClock(speaker, base)
    assert clock.now_ns() == 0
    base.advance_ns(1_000_000_000)
    assert speaker.position_samples() == 16000
    assert clock.now_ns() == 1_000_000_000
    clock.sleep_until_ns(2_500_000_000)
    assert clock.now_ns() == 2_500_000_000


def test_media_clock_never_goes_backwards_and_interpolates_within_a_block():
    class BlockySpeaker:
        sample_rate_hz = 1000
        position = 0

        def position_samples(self):
            return self.position

    base = ManualTimeBase()
    speaker = BlockySpeaker()
    clock = MediaClock(speaker, base)
    readings = []
    for _ in range(10):
        for _ in range(4):  # the sound card reports in 10-sample (10 ms) periods
            base.advance_ns(2_500_000)
            readings.append(clock.now_ns())
        speaker.position += 10
    readings.append(clock.now_ns())
    assert readings == sorted(readings)
    # Never ahead of the next period boundary the card will report.
    for i, r in enumerate(readings[:-1]):
        assert r <= ((i // 4) + 1) * 10_000_000


def test_accelerated_time_base_skips_sleep_but_counts_work():
    base = AcceleratedTimeBase()
    start = base.monotonic_ns()
    base.sleep_until_ns(start + 3_600 * 10**9)  # an hour passes instantly
    assert base.monotonic_ns() - start >= 3_600 * 10**9
    before = base.monotonic_ns()
    sum(range(200_000))  # real work still takes time
    assert base.monotonic_ns() > before


def test_speaker_plays_silence_when_idle_and_speech_in_order():
    base = ManualTimeBase()
    speaker = VirtualAudioOutput(base, sample_rate_hz=1000, block_ms=10)
    played = []
    speaker.add_tap(lambda block, first: played.append((first, block.copy())))
    speaker.start()
    base.advance_ns(50_000_000)
    speaker.position_samples()
    start_index = speaker.write(np.ones(25, np.float32))
    assert start_index == 60  # the device already pulled blocks up to sample 60
    base.advance_ns(100_000_000)
    speaker.position_samples()
    firsts = [f for f, _ in played]
    assert firsts == list(range(0, firsts[-1] + 1, 10))  # contiguous blocks from sample 0
    audio = np.concatenate([b for _, b in played])
    assert not audio[:60].any()
    assert np.allclose(audio[60:85], speaker.volume)
    assert not audio[85:].any()
    assert speaker.speech_samples_played == 25


def test_speaker_clear_discards_queued_speech():
    speaker = VirtualAudioOutput(ManualTimeBase(), sample_rate_hz=1000)
    speaker.write(np.ones(500, np.float32))
    assert speaker.queued_ms == 500
    assert speaker.clear() == 500
    assert speaker.queued_ms == 0 and speaker.samples_discarded == 500


def test_sample_queue_wraps_and_blocks_loudly_when_full():
    q = SampleQueue(8)
    q.write(np.arange(6, dtype=np.float32))
    out = np.empty(4, np.float32)
    assert q.read_into(out) == 4 and list(out) == [0, 1, 2, 3]
    q.write(np.arange(6, 12, dtype=np.float32))  # wraps around the ring
    out = np.empty(10, np.float32)
    assert q.read_into(out) == 8
    assert list(out[:8]) == [4, 5, 6, 7, 8, 9, 10, 11] and not out[8:].any()
    q.write(np.zeros(8, np.float32))
    with pytest.raises(AudioOutputError, match="speaker queue full"):
        q.write(np.zeros(1, np.float32), timeout_s=0.05)


def test_unknown_audio_output_scheme_is_explained():
    with pytest.raises(AudioOutputError, match="virtual://"):
        open_audio_output("hdmi://0", ManualTimeBase(), 16000, 10, 1000, 1.0)


def test_drop_oldest_policy_counts_what_it_drops():
    q = BoundedQueue("frames", 3, OverflowPolicy.DROP_OLDEST)
    for i in range(5):
        q.put(i)
    assert q.drain() == [2, 3, 4]
    assert q.stats()["dropped"] == 2 and q.stats()["high_water"] == 3


def test_block_policy_waits_for_room_then_fails_loudly():
    q = BoundedQueue("speech", 1, OverflowPolicy.BLOCK, put_timeout_s=0.05)
    q.put("a")
    with pytest.raises(QueueFull, match="speech"):
        q.put("b")
    threading.Timer(0.02, q.get).start()
    q.put_timeout_s = 2.0
    q.put("c")  # succeeds once the consumer takes "a"
    assert q.get(timeout_s=1.0) == "c"


def test_control_messages_jump_ahead_of_media_and_are_never_dropped():
    q = BoundedQueue("speech", 2, OverflowPolicy.DROP_OLDEST)
    q.put("reply 1")
    q.put("reply 2")
    q.put(ControlMessage("interrupt"))
    q.put("reply 3")
    first = q.get(timeout_s=0)
    assert isinstance(first, ControlMessage) and first.kind == "interrupt"
    assert q.clear_media() == 2
    with pytest.raises(QueueEmpty):
        q.get(timeout_s=0.01)
