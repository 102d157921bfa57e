"""Evaluation of generation runs: reward ± SE, LLM-judge win-tie, ROUGE-L diversity, a report."""
