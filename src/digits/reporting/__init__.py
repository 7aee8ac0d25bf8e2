"""Reporting: matplotlib Figures, the HTML report and the notebook cards, drawn from what evaluation computed.

May import: `digits.evaluation` and every stage below it.
"""
