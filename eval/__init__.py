"""Evaluation beside the library: Countdown accuracy, win rates, the reward server, results and submissions."""
