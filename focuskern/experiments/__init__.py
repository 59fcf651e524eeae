"""Applications built on the library: the demo (seed 000's experiment), the lost-in-the-middle
evaluation, their metrics, prompts, model loading and the metadata every result records.  Nothing in
the library imports this package."""
