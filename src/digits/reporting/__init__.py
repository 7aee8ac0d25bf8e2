"""Reporting: matplotlib Figures, the HTML report and the notebook cards, drawn from what evaluation computed. The
pages and cards are Jinja2 templates (templates/), rendered with one escaping environment (templating.py).

May import: `digits.evaluation` and every stage below it.
"""
