"""Where the avatar goes: the speaker (the master clock), a window, an MP4 file, or nowhere."""
