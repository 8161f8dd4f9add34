"""What to do for a secret write, a resolution, a rotation: orchestrating storage and domain."""
