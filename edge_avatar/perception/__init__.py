"""Perception: camera frames and microphone audio to the perception token."""
