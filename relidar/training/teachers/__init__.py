"""Teachers: 2D vision-language models giving dense, text-aligned image features."""
