"""A miniature MagicID world: procedural avatars whose motion follows a prompt, small enough for a CPU."""
