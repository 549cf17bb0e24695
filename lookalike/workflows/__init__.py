"""Code that combines the layers below it: indexing, landmarks, training, evaluation, the demo."""
