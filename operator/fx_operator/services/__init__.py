"""What to do for a secret write, a resolution, a rotation: orchestration over storage and domain."""
