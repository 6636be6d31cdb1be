"""Closed-loop evaluation and demonstration collection on the simulated tasks."""
