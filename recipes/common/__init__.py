"""Building blocks every generate → score → select → train recipe shares: stages, processes, generation, scoring."""
