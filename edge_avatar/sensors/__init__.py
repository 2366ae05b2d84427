"""Sources of what the avatar sees and hears, opened by URI (see camera.py and microphone.py)."""
