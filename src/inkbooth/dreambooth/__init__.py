"""DreamBooth for Stable Diffusion 1.x: class images, training, export, samples (diffusers)."""

from inkbooth import quiet

# Every module here imports diffusers: its messages that are not the user's to fix go first.
quiet.library_notes()
