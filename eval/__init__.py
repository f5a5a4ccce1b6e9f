"""Evaluation: shared sampling (`eval.sampling`) and the Countdown benchmark (`eval.countdown`)."""
